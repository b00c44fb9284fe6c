"""The maths of RL for language models, in small pure modules that import torch only (no Hugging Face):

- ``rollout``: the ``Rollout`` record of one step's samples, log-probs, rewards and advantages;
- ``kl``: per-token KL estimators (k1, k2, k3) and the KL coefficient's controllers (fixed, adaptive);
- ``advantages``: per-token rewards, GAE, and the critic-free estimators (GRPO, Dr. GRPO, RLOO, REINFORCE++);
- ``stats``: masked variance and whitening, score normalisation, running moments, explained variance;
- ``aggregate``: loss aggregation (token mean with a global normaliser, sequence mean, fixed-length).

``rewards`` and ``rule_rewards`` are where scores come from (a reward model or a function); they are not maths
and may import more.
"""
