"""A tokenizer and a new language: measure how well the tokenizer covers a text (``coverage``), extend its
vocabulary and the model's embeddings where it does not (``extend``); ``alignkit tokenizer report|extend``
(``commands``). See docs/tokenizer.md."""
