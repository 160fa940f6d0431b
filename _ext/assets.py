"""Each page's scripts once: drops inline scripts that Sphinx 7 lists twice.

An extension that calls ``app.add_js_file(None, body=...)`` after the HTML builder exists (as
sphinx-thebe does for its ``const THEBE_JS_URL = ...`` line) gets its script into the builder's
list twice, once with the file name ``None`` and once, when the builder prepares to write, as
``''``; the two do not compare equal, so every page declared ``THEBE_JS_URL`` twice and the
browser's console showed "Identifier 'THEBE_JS_URL' has already been declared". This extension
removes such duplicates from each page's ``script_files`` before the page is rendered. Loaded
through ``sphinx.local_extensions`` in ``_config.yml``.
"""


def _key(script):
    attributes = tuple(sorted((k, str(v)) for k, v in script.attributes.items() if k != "priority"))
    return (script.filename or "", attributes)


def dedupe_scripts(app, pagename, templatename, context, doctree):
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, unique = set(), []
    for script in scripts:
        key = _key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique


def setup(app):
    app.connect("html-page-context", dedupe_scripts, priority=100)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
