"""Tiny llama-shaped models built locally: random weights and a tokenizer trained on the spot.

Nothing here downloads anything. Tests, benchmarks and the offline demo use
these models to run the real transformers/peft code paths on a laptop CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

# A bilingual corpus so the byte-level BPE learns merges for both scripts.
DEFAULT_CORPUS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue in simple words.",
    "List three ways to save water at home.",
    "Translate the sentence into French: I like reading books.",
    "Summarize the following paragraph in one sentence.",
    "Give an example of a prime number greater than ten.",
    "What is the capital of France? The capital of France is Paris.",
    "Classify the sentiment of this review as positive or negative.",
    "请写一首关于春天的短诗。",
    "用简单的语言解释为什么天空是蓝色的。",
    "列出三种在家里节约用水的方法。",
    "把下面的句子翻译成英文：我喜欢读书。",
    "总结下面这段话的主要内容。",
    "给出一个大于十的质数的例子。",
    "中国的首都是哪里？中国的首都是北京。",
    "Instruction: Input: Output: Response: ### 1. 2. 3. 4. 5. 6. 7. 8. 9. 10.",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def train_tokenizer(corpus: Iterable[str], vocab_size: int = 512):
    """A byte-level BPE tokenizer trained on `corpus`, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    special = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(
    out_dir: str | Path,
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 512,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    seed: int = 0,
    chat_template: bool = True,
) -> Path:
    """Write a random-weight LlamaForCausalLM and its tokenizer to `out_dir`; returns the path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(corpus or DEFAULT_CORPUS, vocab_size=vocab_size)
    if not chat_template:
        tokenizer.chat_template = None
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
