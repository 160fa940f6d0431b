"""The attention course: the history and the math of attention, one runnable JAX chapter at a time.

Shared pieces: ``tasks`` (synthetic parallel corpora), ``pooling`` (masked softmax and the
weighted average), ``rnn`` (GRU encoders), ``train`` (the training loop), ``decode`` (greedy and
beam search), ``metrics``, ``plots``, ``grading`` and ``runtime``. Each chapter has a module of
its own. Import the submodules you need: ``from attention_course import pooling``.
"""

__version__ = "0.1.0"
