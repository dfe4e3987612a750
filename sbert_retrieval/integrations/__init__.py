"""Optional integrations: a LangChain adapter and an HTTP search service.

Each submodule needs its own extra and is imported explicitly, never from here:

* :mod:`sbert_retrieval.integrations.langchain` — ``pip install 'sbert-retrieval[langchain]'``
  (``SbertEmbeddings``, ``SbertVectorStore``, ``SbertRetriever`` on langchain-core).
* :mod:`sbert_retrieval.integrations.server` — ``pip install 'sbert-retrieval[server]'``
  (a FastAPI app, ``create_app(ServerConfig(...))``; ``sbert-retrieval serve`` runs it).
"""

from __future__ import annotations
