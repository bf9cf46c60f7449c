"""LLM providers: the chat contract plugins implement, and the built-in providers.

This package exports the contract, `neuron_explainer.llm.base`: `LLM`, `ChatRequest`,
`ChatResponse`, `PromptLogprobsRequest`, `PromptLogprobsResponse`, `PrefixLogprobsRequest`,
`PrefixLogprobsResponse` and the types inside them.
The modules:

* `base`: the contract (these names);
* `openai`: the ``openai`` provider, `OpenAILLM` (configuration, API key, base URL, response
  cache, usage and cost), built on
  * `protocol`: the OpenAI wire format, request bodies (pydantic) and the chat parsers;
  * `prompt_logprobs`: the parsers of scored prompts (``echo``, vLLM), lined up with the prompt;
  * `transport`: `RetryingClient`, one ``httpx.AsyncClient`` per event loop, limits, retries,
    typed errors, and the ``transport=`` seam (``httpx.MockTransport`` in tests);
  * `_prefill`: what a chat request needs of its LLM, and prefills read back;
  * `_llamacpp`: llama.cpp's native ``/completion``, the prefix logprobs;
* `llamacpp`: the ``llamacpp`` provider, `LlamaCppLLM`: `OpenAILLM` declaring llama.cpp's
  capabilities (prefix logprobs, prefill);
* `cache`, `limits`, `usage`: the response cache, client-side rate limits, usage meters and
  budgets, for any provider;
* `hf`: the ``hf`` provider, a Hugging Face model in-process (`_hf_engine`, `_hf_generate`: its
  torch side; `_hf_grammar`: constrained JSON decoding with xgrammar);
* `prompts`, `few_shot`: prompt text helpers and the paper's few-shot examples, shared by the
  LLM-backed explainer and simulators.
"""

from neuron_explainer.llm.base import *  # noqa: F403  (the names of base.__all__)
from neuron_explainer.llm.base import __all__ as __all__
