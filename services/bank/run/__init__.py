"""Running the bank: ``config`` (``BankConfig``, the settings), ``server`` (one process serving
until a signal) and ``workers`` (``serve --workers N``: N processes on one port, supervised).

Importing this package, or ``config``, loads no web framework: only ``server`` and ``workers``
start aiohttp.
"""
