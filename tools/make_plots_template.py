"""Build ``.dvc/offline_plots.html``: the page template ``dvc plots show`` and ``dvc plots
diff`` fill, with Vega, Vega-Lite and vega-embed inlined, so the charts render with no
network (DVC's own page loads them from a CDN and shows nothing offline).

    python tools/make_plots_template.py [--from DIR]

Fetches the packages from the npm registry (``npm pack``) unless ``--from DIR`` holds the
three unpacked packages (``DIR/vega/build/vega.min.js`` ...). The result is committed, and
``.dvc/config`` names it (``plots.html_template``); run this again only to change versions.
Vega, Vega-Lite and vega-embed are BSD-3-Clause licensed (University of Washington
Interactive Data Lab); their notices stay in the page.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

PACKAGES = {"vega": "5.30.0", "vega-lite": "5.21.0", "vega-embed": "6.26.0"}
OUT = Path(__file__).resolve().parents[1] / ".dvc" / "offline_plots.html"

PAGE = """<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot (offline)</title>
{scripts}
    <style>
        body {{ font-family: sans-serif; }}
        table {{ border-spacing: 15px; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def fetch(dest: Path) -> Path:
    for name, version in PACKAGES.items():
        subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=dest, check=True, capture_output=True)
        with tarfile.open(dest / f"{name}-{version}.tgz") as tar:
            tar.extractall(dest / "x", filter="data")
        (dest / "x" / "package").rename(dest / name)
    return dest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--from", dest="src", default=None, help="folder with the unpacked vega, vega-lite and vega-embed packages")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(args.src) if args.src else fetch(Path(tmp))
        scripts = []
        for name, version in PACKAGES.items():
            js = (src / name / "build" / f"{name}.min.js").read_text(encoding="utf8")
            if "</script" in js:
                js = js.replace("</script", "<\\/script")
            scripts.append(f"    <!-- {name} {version}, BSD-3-Clause, https://github.com/vega/{name} -->\n    <script>{js}</script>")
        OUT.write_text(PAGE.format(scripts="\n".join(scripts)), encoding="utf8")
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
