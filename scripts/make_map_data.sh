#!/bin/sh
# Reproduce /tmp/research16/out/ (run in /tmp/research16).
set -e
npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz        # -> package/*.json
python3 convert.py package out                                        # -> out/coast-*.bin, out/borders-*.bin
apt-get download fonts-dejavu-core && dpkg-deb -x fonts-dejavu-core_2.37-6_all.deb deb/x
python3 -m venv venv && ./venv/bin/pip install -q fonttools
./venv/bin/pyftsubset deb/x/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00A0-00FF,U+2013-2014,U+2018-201D,U+2022,U+2026,U+2032-2033,U+2070-209F,U+2212,U+0394,U+03BC,U+03C3" \
  --legacy-kern --drop-tables+=GPOS,GSUB,GDEF,MATH,FFTM --no-hinting --desubroutinize \
  --output-file=out/DejaVuSans-subset.ttf
