#!/usr/bin/env python3
"""Writes assets/world-110m.path: the land outlines of the status page's map, as one SVG path in
an equirectangular projection (x = longitude + 180, y = 90 - latitude, one decimal).

The outlines are Natural Earth's 1:110m land (public domain), as the npm package world-atlas
2.0.2 (ISC) redistributes them in TopoJSON. Run it again only to change the map:

    scripts/world-map.py [land-110m.json]     # else fetched with `npm pack world-atlas@2.0.2`
"""
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent


def topology(argv):
    if len(argv) > 1:
        return json.loads(pathlib.Path(argv[1]).read_text())
    with tempfile.TemporaryDirectory() as work:
        subprocess.run(["npm", "pack", "--silent", "world-atlas@2.0.2"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        with tarfile.open(pathlib.Path(work) / "world-atlas-2.0.2.tgz") as tar:
            return json.load(tar.extractfile("package/land-110m.json"))


def decoded_arcs(topo):
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring(arcs, indexes):
    points = []
    for i in indexes:
        arc = arcs[i] if i >= 0 else list(reversed(arcs[~i]))
        points.extend(arc if not points else arc[1:])
    return points


def unwrapped(points):
    """The ring with each longitude within 180 degrees of the one before, so that rings across
    the antimeridian draw no line across the map; a ring around the pole is closed along it."""
    out = []
    for lon, lat in points:
        if out:
            while lon - out[-1][0] > 180:
                lon -= 360
            while out[-1][0] - lon > 180:
                lon += 360
        out.append((lon, lat))
    if abs(out[-1][0] - out[0][0]) > 180:
        pole = 90 if sum(lat for _, lat in out) > 0 else -90
        out += [(out[-1][0], pole), (out[0][0], pole)]
    return out


def copies(points):
    """The ring, and its copy a turn east or west where it reaches past the map's edge."""
    yield points
    if min(lon for lon, _ in points) < -180:
        yield [(lon + 360, lat) for lon, lat in points]
    if max(lon for lon, _ in points) > 180:
        yield [(lon - 360, lat) for lon, lat in points]


def main(argv):
    topo = topology(argv)
    arcs = decoded_arcs(topo)
    parts = []
    for geometry in topo["objects"]["land"]["geometries"]:
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        for polygon in polygons:
            for copy in (c for indexes in polygon for c in copies(unwrapped(ring(arcs, indexes)))):
                pts = [(round(lon + 180, 1), round(90 - lat, 1)) for lon, lat in copy]
                deduped = [p for i, p in enumerate(pts) if i == 0 or p != pts[i - 1]]
                if len(deduped) < 3:
                    continue
                head, *rest = deduped
                parts.append(f"M{head[0]:g} {head[1]:g}" + "".join(f"L{x:g} {y:g}" for x, y in rest) + "Z")
    out = ROOT / "assets" / "world-110m.path"
    out.write_text("".join(parts) + "\n")
    print(f"{out}: {len(parts)} rings, {out.stat().st_size} bytes")


if __name__ == "__main__":
    main(sys.argv)
