"""The live web page served by the daemon (`[web] listen`): overview, one page per job, `/metrics`.

    server.py   the HTTP server (standard library, threads) and its lifecycle
    routes.py   every URL, as one table; what may be served and who may POST
    api.py      the JSON the pages read
    files.py    which files may be served, byte ranges, thumbnails made once
    static/     the pages: plain HTML, CSS and a little JavaScript, no build step, no external assets
"""
