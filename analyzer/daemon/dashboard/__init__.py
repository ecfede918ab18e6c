"""The dashboard's static files (index.html, style.css, app.js, charts.js): vanilla
JavaScript and hand-written SVG charts, no build step, no third-party code, shipped as package
data and served by analyzer/daemon/api/ui.py."""
