"""Train a small byte-level BPE tokenizer with a ChatML chat template, offline."""

from __future__ import annotations

from collections.abc import Iterable

# ChatML, with {% generation %} markers so transformers can return an assistant-token mask.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

SPECIAL_TOKENS = {
    "bos_token": "<|endoftext|>",
    "eos_token": "<|im_end|>",
    "pad_token": "<|pad|>",
    "unk_token": None,
}
CHAT_TOKENS = ["<|endoftext|>", "<|im_end|>", "<|pad|>", "<|im_start|>"]


def build_tokenizer(texts: Iterable[str], vocab_size: int = 2048, min_frequency: int = 2, *, split_digits: bool = False):
    """A byte-level BPE tokenizer trained on ``texts``, as a transformers fast tokenizer.

    Special tokens: ``<|endoftext|>`` (bos), ``<|im_end|>`` (eos, ends every chat turn), ``<|pad|>``,
    ``<|im_start|>``. The chat template is ChatML.

    ``split_digits``: every ASCII digit is its own pre-token, so no merge joins digits ("123" is always
    the three tokens "1", "2", "3"; arithmetic tasks then see numbers digit by digit). Off by default:
    plain byte-level BPE merges frequent digit runs like "12".
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    if split_digits:
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=CHAT_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIAL_TOKENS["bos_token"],
        eos_token=SPECIAL_TOKENS["eos_token"],
        pad_token=SPECIAL_TOKENS["pad_token"],
        additional_special_tokens=["<|im_start|>"],
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.padding_side = "right"
    return fast
