"""Streamlit entry point: the four tiles of the ledger (the full app replaces this)."""

import streamlit as st

from ledger import store
from ledger.cli import money
from ledger.queries import Filters, tiles

st.set_page_config(page_title="Replay Hub · replay-ledger", page_icon="🔁", layout="wide")
ledger = store.ledger_path()
st.title("Replay Hub")
try:
    values = tiles(ledger, Filters())
except store.LedgerMissing:
    st.info(f"No ledger at {ledger} yet. Run `replay-ledger demo` or `replay-ledger ingest PATH` first.")
    st.stop()
columns = st.columns(4)
columns[0].metric("Submissions", f"{values.submissions:,}")
columns[1].metric("Actions Replayed", f"{values.actions_replayed:,}")
columns[2].metric("Divergences", f"{values.divergences:,}")
columns[3].metric("Cost Saved", money(values.cost_saved))
