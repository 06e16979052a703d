"""Replay Hub: the submissions that match the shared filters, four tiles with their change, a sorted table."""

from ledger.ui.hub_page import render

render()
