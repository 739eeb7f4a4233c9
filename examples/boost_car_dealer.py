"""BOOST on Car Dealer (built-in rule-based buyer): the recipe of ``examples/boost_webshop.py``.

    accelerate launch examples/boost_car_dealer.py
    accelerate launch examples/boost_car_dealer.py --method vanilla_synthetic --num_real 120
    accelerate launch examples/boost_car_dealer.py --methods vanilla_synthetic boost

Without ``--dataset`` (e.g. LMRL-Gym car-dealer data converted with ``trainers.data.converters``),
real episodes are played against the built-in buyer by two scripted sellers: an expert that
presents the requested brand and type and prices it at the buyer's budget, and a noisy one that
starts far above the list price, concedes slowly and sometimes pushes another car type.
Paper settings (appendix D): GPT-2, α 10 (MC) / 1 (ILQL), batch 8 x 2, K 32, reweighting head depth 2.
"""

from trainers.recipes import boost

if __name__ == "__main__":
    boost.main("car_dealer")
