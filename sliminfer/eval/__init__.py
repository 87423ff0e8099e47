"""Accuracy evaluation: does a config keep the unpruned model's answers?

Tasks (one module each): RULER-style needles (:mod:`.needles`), passkey retrieval (:mod:`.passkey`),
language-modelling agreement (:mod:`.lm_agreement`), long-context QA (:mod:`.qa`) and a LongBench
loader (:mod:`.longbench`); :mod:`.runner` runs any list of configs on the same samples, resumably,
and :mod:`.report` writes the side-by-side tables and plots. ``sliminfer eval`` is the command.
Importing this package loads no data, model or plotting library.
"""
