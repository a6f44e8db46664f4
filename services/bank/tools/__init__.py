"""The bank's load tools: ``hammer`` (the load generator, on a raw HTTP/1.1 client of its own in
``_raw_client``) and ``showdown`` (every lock mode under the same load, one table)."""
