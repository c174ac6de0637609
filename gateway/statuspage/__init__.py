"""The status page (`GET /`): the `/status` document rendered as HTML for a person.

`render.py` turns the document into HTML (pure, everything escaped); `static/` holds the page's
stylesheet and script, shipped as package data and served as they are (no build step).
"""
