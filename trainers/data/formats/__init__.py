"""One module per published trajectory format; :mod:`trainers.data.converters` is the entry point.

* :mod:`.common`: :class:`ConversionError`, :func:`read_json_records` (``.json`` / ``.jsonl`` /
  folder of ``.json``) and the per-record validation every converter ends with;
* :mod:`.eto`: ETO / TraTree agent trajectories (``convert_eto``, ``split_in_context_examples``);
* :mod:`.lmrl_twenty_questions`: LMRL-Gym twenty questions (``convert_twenty_questions``);
* :mod:`.lmrl_car_dealer`: LMRL-Gym car dealer (``convert_car_dealer``).
"""
