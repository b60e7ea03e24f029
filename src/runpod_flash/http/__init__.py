"""The one HTTP/1.1 client of the SDK, the worker runtime and the platform.

`aio` is the asyncio client (gateway hop, async live calls, queue workers), `blocking` the
socket-per-thread one (sync calls, control API); both read responses with `parse` and share
the header rules in `headers` and the errors in `errors`.
"""
