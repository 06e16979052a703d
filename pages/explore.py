"""Explore: every submission matching the filters, with chosen columns, sorted and paged on the server, downloadable; and a read-only SQL box."""

from ledger.ui.explore_page import render

render()
