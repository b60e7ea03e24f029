"""`flash run`: a local FastAPI dev server whose routes call the project's `@remote` functions.

The parent process (`session`) owns the listening socket, the file watcher and the clean-up;
each version of the project is served by a child process (`child`) that imports it and serves
its routes (`app`, `routes`, `calls`). Nothing here is imported by workers except `warmup`,
so this `__init__` stays free of imports.
"""
