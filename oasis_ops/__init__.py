"""oasis-ops: the operations console for long, Ollama-backed evaluation runs.

The library is UI-free: no Streamlit import anywhere in this package (a test checks it).
"""

__version__ = "0.1.0"
