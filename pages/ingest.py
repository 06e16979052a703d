"""Ingest: upload replay results into the ledger, add deploy markers, and review past ingests and their rejected records."""

from ledger.ui.ingest_page import render

render()
