#!/bin/sh
# Rebuilds assets/maps/*.bin and assets/fonts/DejaVuSans-subset.ttf from their public sources
# (needs the npm and Debian registries): Natural Earth 4.1.0 as the npm package world-atlas
# 2.0.2 ships it (TopoJSON; data public domain, package ISC), and DejaVu Sans from Debian's
# fonts-dejavu-core, subset to Latin-1 and a few symbols with fonttools' pyftsubset.
# The shipped files are what this wrote; the 1:10m lines it also writes are not shipped.
set -eu
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack world-atlas@2.0.2 >/dev/null && tar xzf world-atlas-2.0.2.tgz       # -> package/*.json
python3 "$here/scripts/make_map_data.py" package out
cp out/coast-110m.bin out/coast-50m.bin out/borders-110m.bin out/borders-50m.bin "$here/assets/maps/"
apt-get download fonts-dejavu-core >/dev/null && dpkg-deb -x fonts-dejavu-core_*_all.deb deb
python3 -m venv venv && ./venv/bin/pip install -q fonttools
./venv/bin/pyftsubset deb/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf \
  --unicodes="U+0020-007E,U+00A0-00FF,U+2013-2014,U+2018-201D,U+2022,U+2026,U+2032-2033,U+2070-209F,U+2212,U+0394,U+03BC,U+03C3" \
  --legacy-kern --drop-tables+=GPOS,GSUB,GDEF,MATH,FFTM --no-hinting --desubroutinize \
  --output-file="$here/assets/fonts/DejaVuSans-subset.ttf"
echo "wrote $here/assets/maps/*.bin and $here/assets/fonts/DejaVuSans-subset.ttf"
