"""The models behind one interface: OpenAI-compatible servers, in-process transformers (torch or CTranslate2), vLLM; their config, cache, meter, cancel flag and the real model fetched offline."""
