"""What runs other stages: ``pipeline`` (the stages of one YAML in order) and ``self-reward`` (rounds of generate,
judge, pair, train, evaluate). Nothing is imported here: each module is loaded by the stage registry
(``alignkit.stages``) when its command runs."""
