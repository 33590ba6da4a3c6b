#!/usr/bin/env python3
"""Turn world-atlas TopoJSON (Natural Earth, public domain) into compact polylines for include_bytes!.

Input : package/land-{110m,50m,10m}.json and package/countries-{110m,50m,10m}.json
        from `npm pack world-atlas@2.0.2 && tar xzf world-atlas-2.0.2.tgz` (ISC package, NE data = PD).
Output: out/coast-<res>.bin   land outlines (coastlines), artificial edges removed
        out/borders-<res>.bin land borders between countries (arcs shared by two countries)

Binary format (little endian, no header; read until end of slice):
    repeat { n: u32, then n x (lon: i16, lat: i16) }      units: 0.01 degree (centidegrees)
    lon in [-18000, 18000], lat in [-9000, 9000]. Each polyline has n >= 2.
    No segment crosses the antimeridian: the source rings do (world-atlas merges land across
    +-180), so they are cut there; edges running along +-180 or along lat -90 (polygon closure,
    not coast) are dropped. Draw each polyline as a plain line strip in lon/lat.

TopoJSON decoding (spec 2.1.x): topology.arcs is a list of arcs; with a `transform`, each arc's
positions are delta-encoded integers: x += dx, y += dy cumulatively starting from 0 for every arc,
then lon = x*scale[0] + translate[0], lat = y*scale[1] + translate[1].
A geometry references arcs by index; a negative index i means arc ~i (= -i-1) reversed.
Consecutive arcs of one ring share their end/start point.

Usage: python3 scripts/make_map_data.py PACKAGE_DIR OUT_DIR (scripts/make_map_data.sh runs it)
"""
import json
import os
import struct
import sys
import zlib

UNIT = 100  # steps per degree (0.01 deg)


def decode_arcs(topo):
    t = topo.get("transform")
    arcs = []
    for arc in topo["arcs"]:
        if t:
            (sx, sy), (tx, ty) = t["scale"], t["translate"]
            x = y = 0
            pts = []
            for dx, dy in arc:
                x += dx
                y += dy
                pts.append((x * sx + tx, y * sy + ty))
        else:
            pts = [(p[0], p[1]) for p in arc]
        arcs.append(pts)
    return arcs


def arc_ids_of(geom):
    """Yield the arc indices (possibly negative) of every ring/line of a geometry, as lists."""
    typ = geom["type"]
    if typ == "GeometryCollection":
        for g in geom["geometries"]:
            yield from arc_ids_of(g)
    elif typ in ("LineString",):
        yield geom["arcs"]
    elif typ in ("MultiLineString", "Polygon"):
        yield from geom["arcs"]
    elif typ == "MultiPolygon":
        for poly in geom["arcs"]:
            yield from poly


def arc_points(arcs, i):
    return arcs[i] if i >= 0 else arcs[~i][::-1]


def stitch(arcs, ids):
    pts = []
    for i in ids:
        a = arc_points(arcs, i)
        pts.extend(a if not pts else a[1:])
    return pts


def artificial(p, q):
    """Edge along the antimeridian or along the south-pole cut: not a coastline."""
    if abs(p[0]) >= 179.999 and abs(q[0]) >= 179.999 and (p[0] > 0) == (q[0] > 0):
        return True
    if p[1] <= -89.99 and q[1] <= -89.99:
        return True
    return False


def split_crossings(pts):
    """Cut where a segment jumps across the antimeridian (|dlon| > 180): world-atlas rings of
    Chukotka, Wrangel, Fiji and Antarctica run on across +-180. End the piece at +-180 on one
    side (latitude interpolated) and start the next piece at the other side."""
    out, cur = [], [pts[0]]
    for p, q in zip(pts, pts[1:]):
        if abs(q[0] - p[0]) > 180:
            side = 180.0 if p[0] > 0 else -180.0          # p's side
            qx = q[0] + (360.0 if side > 0 else -360.0)   # q unwrapped next to p
            f = 0.0 if qx == p[0] else (side - p[0]) / (qx - p[0])
            lat = p[1] + f * (q[1] - p[1])
            if cur[-1] != (side, lat):
                cur.append((side, lat))
            out.append(cur)
            cur = [(-side, lat)]
            if q != cur[-1]:
                cur.append(q)
        else:
            cur.append(q)
    out.append(cur)
    return [l for l in out if len(l) >= 2]


def split_artificial(pts):
    out, cur = [], [pts[0]]
    for p, q in zip(pts, pts[1:]):
        if artificial(p, q):
            if len(cur) >= 2:
                out.append(cur)
            cur = [q]
        else:
            cur.append(q)
    if len(cur) >= 2:
        out.append(cur)
    return out


def quantize(line):
    q = []
    for lon, lat in line:
        p = (round(lon * UNIT), round(lat * UNIT))
        if not q or q[-1] != p:
            q.append(p)
    return q if len(q) >= 2 else None


def encode(lines):
    buf = bytearray()
    for line in lines:
        buf += struct.pack("<I", len(line))
        for lon, lat in line:
            buf += struct.pack("<hh", lon, lat)
    return bytes(buf)


def stats(name, lines, raw_lines, path):
    data = encode(lines)
    with open(path, "wb") as f:
        f.write(data)
    npts = sum(len(l) for l in lines)
    cross = sum(1 for l in raw_lines for p, q in zip(l, l[1:]) if abs(p[0] - q[0]) > 180)
    on180 = sum(1 for l in lines for p in l if abs(p[0]) == 180 * UNIT)
    print(f"{name:14s} polylines={len(lines):6d} points={npts:8d} bytes={len(data):9d} "
          f"zlib9={len(zlib.compress(data, 9)):8d} antimeridian-crossing-segments={cross} "
          f"points-on-180={on180}")


def land_lines(topo):
    arcs = decode_arcs(topo)
    lines = []
    for ring in arc_ids_of(topo["objects"]["land"]):
        for piece in split_crossings(stitch(arcs, ring)):
            lines.extend(split_artificial(piece))
    return lines


def border_lines(topo):
    """Arcs used by two different countries (topojson.mesh(t, countries, (a, b) => a !== b))."""
    arcs = decode_arcs(topo)
    users = {}
    for gi, g in enumerate(topo["objects"]["countries"]["geometries"]):
        for ring in arc_ids_of(g):
            for i in ring:
                users.setdefault(i if i >= 0 else ~i, set()).add(gi)
    lines = []
    for i, u in sorted(users.items()):
        if len(u) >= 2:
            for piece in split_crossings(arcs[i]):
                lines.extend(split_artificial(piece))
    return lines


def main():
    pkg = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "package")
    out = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "out")
    os.makedirs(out, exist_ok=True)
    for res in ("110m", "50m", "10m"):
        with open(os.path.join(pkg, f"land-{res}.json")) as f:
            raw = land_lines(json.load(f))
        lines = [q for q in map(quantize, raw) if q]
        stats(f"coast-{res}", lines, raw, os.path.join(out, f"coast-{res}.bin"))
        with open(os.path.join(pkg, f"countries-{res}.json")) as f:
            raw = border_lines(json.load(f))
        lines = [q for q in map(quantize, raw) if q]
        stats(f"borders-{res}", lines, raw, os.path.join(out, f"borders-{res}.bin"))


if __name__ == "__main__":
    main()
