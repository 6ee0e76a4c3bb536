"""Rendering the report's blocks: Markdown with figures linked relative to where the file lies, and a
self-contained HTML page (markdown-it-py) with the figures as base64 data URIs."""
import base64, html, os, re, urllib.parse
from pathlib import Path

from markdown_it import MarkdownIt
from PIL import Image


def _link(path, base):
    return urllib.parse.quote(Path(os.path.relpath(Path(path).resolve(), Path(base).resolve())).as_posix(), safe='/')


def _alt(text): return re.sub(r'([\\\[\]`*_])', r'\\\1', text)  # Markdown-escaped: the alt text reads as written


def render_markdown(blocks, base):
    "The report's Markdown, its figures linked relative to `base` (the folder the file will lie in)."
    parts = []
    for b in blocks:
        if isinstance(b, list):
            if not b: continue
            parts.append(' '.join(f"![{_alt(f.caption)}]({_link(f.path, base)})" for f in b))
            # one caption line per figure, in the order drawn: what it shows, then what to look at
            parts.append('\n'.join(f"{i}. *{f.caption}*" + (f": look at {f.look}." if f.look else '.')
                                    for i, f in enumerate(b, 1)))
        elif b: parts.append(str(b).strip())
    return '\n\n'.join(parts) + '\n'


def image_links(markdown_text):
    "The image links of a Markdown text, in order (URL-decoded)."
    return [urllib.parse.unquote(m) for m in re.findall(r'!\[(?:\\.|[^\]\\])*\]\(([^)\s]+)\)', markdown_text)]


MIME = {'.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.svg': 'image/svg+xml',
        '.webp': 'image/webp'}

CSS = """
body { font-family: -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif; color: #1f2328;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; line-height: 1.5; font-size: 15px; }
h1 { border-bottom: 2px solid #d0d7de; padding-bottom: .3em; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .25em; margin-top: 2.2em; color: #0b3d91; }
h3 { margin-top: 1.8em; color: #24292f; }
h4, h5, h6 { margin-top: 1.2em; }
code { background: #f3f4f6; padding: .1em .3em; border-radius: 4px; font-size: 88%; overflow-wrap: anywhere; }
td code { white-space: nowrap; }
div.scroll { overflow-x: auto; max-width: 100%; margin: .8em 0; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #d0d7de; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr:nth-child(even) td { background: #fafbfc; }
img { max-width: 100%; max-height: 620px; margin: 4px 6px 4px 0; border: 1px solid #e5e7eb; vertical-align: top; }
img.pair { max-width: calc(50% - 24px); }
blockquote { margin: .8em 0; padding: .5em 1em; background: #fff8c5; border-left: 4px solid #d4a72c; }
blockquote p { margin: .2em 0; }
em { color: #57606a; }
"""


def _aspect(path):
    "Width / height of an image file (1 when it cannot be read)."
    try:
        with Image.open(path) as im: return im.width / max(1, im.height)
    except (OSError, ValueError): return 1.0


def markdown_to_html(text, base, title='Lab report'):
    """A self-contained HTML page of the report's Markdown (markdown-it-py): every image link, resolved against `base`,
    becomes a base64 data URI."""
    md = MarkdownIt('commonmark', {'html': False}).enable('table')
    # a table wider than the page scrolls sideways in its own box, the page does not
    md.renderer.rules['table_open'] = lambda *a: '<div class="scroll">\n<table>\n'
    md.renderer.rules['table_close'] = lambda *a: '</table>\n</div>\n'
    tokens = md.parse(text)
    def walk(ts):
        for t in ts:
            if t.type == 'image':
                path = Path(base) / urllib.parse.unquote(t.attrs['src'])
                t.meta['wide'] = _aspect(path) > 1.9
                data = base64.b64encode(path.read_bytes()).decode('ascii')
                t.attrs['src'] = f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,{data}"
            if t.children: walk(t.children)
    walk(tokens)
    for t in tokens:  # a row of several figures: two to a line, except wide ones (a row of panels)
        images = [c for c in (t.children or []) if c.type == 'image' and not c.meta.get('wide')]
        if len(images) > 1:
            for c in images: c.attrSet('class', 'pair')
    body = md.renderer.render(tokens, md.options, {})
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<title>{html.escape(title)}</title>\n'
            f'<style>{CSS}</style>\n</head>\n<body>\n{body}</body>\n</html>\n')
