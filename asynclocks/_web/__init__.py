"""Races in web APIs: concurrent requests checked for linearizability (see ``asynclocks.web``)."""
