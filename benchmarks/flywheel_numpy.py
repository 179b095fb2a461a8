"""The project's first model (``benchmarks/platform_flywheel_v1.mdl``, a frozen copy of
``models/platform_flywheel.mdl`` v1), hand-written in NumPy for N runs at once.

The practical floor of ``bench_sweep.py``: the same equations as the Vensim file, with no
PySD, no xarray and no per-variable function calls, evaluated for all members in one pass.
Written from the ``.mdl`` and checked against PySD's translation; ``tests/test_numpy_floor.py``
shows that `euler` reproduces ``flywheel_sd.simulate(method="euler")`` to round-off (it is
bit-identical here), and `adaptive` takes the ensemble's own RK45 steps.

Layout. The flat state vector is member-major, ``y.reshape(N, S)``, as the ensemble
integrator's member-wise error norms expect. Inside `FlywheelNumpy.rhs` it is turned
quantity-major, ``(S, N)``, so that each stock is a contiguous row: a scalar quantity has
shape (N,), a quantity subscripted by Quality = High, Low has shape (2, N). Constants that are
not swept stay scalars (subscripted ones (2, 1)) and broadcast.

Time functions follow the engine: under Euler PySD's own STEP (on from ``t + dt/2 > t0``)
and PULSE (on from ``start - 1e-6``); under the adaptive methods the exact ones of
``flywheel_sd.engine.pysd_path.exact_time_functions`` (STEP on from ``t >= t0``), integrated
piecewise between the model's STEP/PULSE times, each piece evaluated from inside. Initial
values always use PySD's functions, since the engine initialises the model before switching
them.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

INITIAL_TIME, FINAL_TIME, TIME_STEP, SAVEPER = 0.0, 120.0, 0.0625, 1.0
QUALITY = ("High", "Low")
SMALL_VENSIM = 1e-6  # PySD's zero for ZIDZ and its early start of PULSE
RPREC = 1e-5  # PySD's relative precision of the final time and the saving times

#: Every constant of the model file, at its value there (subscripted ones: High, Low).
DEFAULTS: dict[str, float | tuple[float, float]] = {
    "Ad Budget": 2e6,
    "Ad Stop Time": 1000,
    "Addressable Market": 2e7,
    "Average Order Value": 25,
    "Benefit Cost per Member": 6,
    "Capability Lifetime": 36,
    "Capacity Adjustment Time": 12,
    "Capacity Cost per Order": 1.5,
    "Competitor Capability Lifetime": 12,
    "Competitor Entry Time": 1000,
    "Competitor Strength": 1.5,
    "Confidence Loss Time": 3,
    "Confidence Recovery Time": 60,
    "Cost Pass Through": 0.5,
    "Cost per Capability Point": 6e7,
    "Cost per Click": 0.5,
    "Cost per Logistics Point": 6e7,
    "Credit Line": 1e8,
    "Deposit End Time": 1000,
    "Deposit Refund Time": 2,
    "Deposit Start Time": 0,
    "Enforcement Intensity": 0.3,
    "Fixed Operating Cost": 1.5e6,
    "Full Enforcement Compliance Cost": 600,
    "Full Qualification Cost": 300,
    "Funding Round Duration": 3,
    "Funding Round Time": 6,
    "Initial Active Buyers": 50000,
    "Initial Active Sellers": 2500,
    "Initial Buyer Trust": 0.5,
    "Initial Logistics Capability": 0.5,
    "Initial Platform Capability": 1,
    "Initial Platform Cash": 5e6,
    "Initial Seller Mix": (0.4, 0.6),
    "Innovation Investment": 0.05,
    "Investor Funding": 3e7,
    "Logistics Asset Lifetime": 48,
    "Logistics Investment": 0.05,
    "Marketplace Selection Bonus": 1,
    "Marketplace Switch Time": 1000,
    "Marketplace Transition Time": 12,
    "Maximum Conversion Rate": 0.12,
    "Member Loyalty Strength": 0.6,
    "Member Visit Multiplier": 1.41,
    "Membership Benefit": 0.5,
    "Membership Fee": 8,
    "Membership Start Time": 1000,
    "Membership Uptake Fraction": 0.02,
    "Membership Wind Down Time": 3,
    "Normal Buyer Churn Fraction": 0.04,
    "Normal Member Lapse Fraction": 0.02,
    "Normal Orders per Buyer": 0.4,
    "Normal Seller Entry Fraction": 0.03,
    "Normal Seller Exit Fraction": 0.02,
    "Orders per New Buyer": 1,
    "Price Level": 1,
    "Product Quality": (0.95, 0.35),
    "Qualification Change Time": 1000,
    "Qualification Rejection Weight": (0.1, 0.9),
    "Qualification Response to Trust": 0.3,
    "Qualification Review Time": 12,
    "Qualification Strictness": 0.2,
    "Qualification Strictness Late": 0.2,
    "Ranking Quality Advantage": (3, 0),
    "Ranking Weight on Quality": 0.4,
    "Reference Choice Share": 0.5,
    "Reference Selection": 20000,
    "Reference Seller Capital": 2000,
    "Reference Seller Profit": 400,
    "Referral Visits per Buyer": 3,
    "Residual Sourcing Dependence": 0.2,
    "Seller Deposit": 0,
    "Seller Fixed Cost": (250, 120),
    "Seller Gross Margin": (0.4, 0.45),
    "Seller Pool": (30000, 50000),
    "Seller Profit Perception Time": 3,
    "Seller Working Capital": (3000, 1500),
    "Substitute Attractiveness": 1,
    "Supply Cost Shock Size": 0,
    "Supply Cost Shock Time": 1000,
    "Take Rate": 0.15,
    "Traffic Adjustment Time": 1,
    "Trust Building Time": 12,
    "Trust Erosion Time": 3,
    "Variable Cost per Order": 1,
    "Violation Removal Rate": (0.005, 0.08),
    "Visits per Active Buyer": 10,
    "Wrongful Penalty Burden Weight": 2,
    "Wrongful Penalty Rate": 0.06,
}


def _table(*points: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*points)
    return np.array(xs, dtype=float), np.array(ys, dtype=float)


#: The model's lookups (WITH LOOKUP), points as in the file. `np.interp` holds the end
#: values outside the table, as Vensim and PySD do.
LOOKUPS = {
    "Effect of Penetration on Churn": _table(
        (0, 1), (0.2, 1), (0.4, 1.1), (0.5, 1.25), (0.6, 1.5), (0.7, 1.9), (0.8, 2.6), (1, 4.5)
    ),
    "Effect of Choice Share on Churn": _table(
        (0, 3), (0.25, 2.2), (0.5, 1.6), (0.75, 1.25), (1, 1), (1.25, 0.84), (1.5, 0.74), (2, 0.64)
    ),
    "Effect of Trust on Churn": _table(
        (0, 3), (0.2, 2.3), (0.4, 1.5), (0.6, 1.1), (0.7, 1), (0.8, 0.95), (1, 0.88)
    ),
    "Effect of Logistics on Churn": _table(
        (0, 1.3), (0.5, 1.12), (1, 1), (2, 0.85), (3, 0.78), (4, 0.75)
    ),
    "Effect of Logistics on Membership Value": _table(
        (0, 0.3), (0.5, 0.6), (1, 1), (2, 1.5), (3, 1.75), (4, 1.85)
    ),
    "Effect of Member Value on Uptake": _table(
        (0, 0), (0.3, 0.05), (0.4, 0.15), (0.5, 0.35), (0.6, 0.6), (0.7, 0.8), (0.85, 0.95), (1, 1)
    ),
    "Effect of Member Value on Lapse": _table(
        (0, 4), (0.3, 2.5), (0.5, 1.2), (0.7, 0.6), (1, 0.4)
    ),
    "Effect of Attractiveness on Entry": _table(
        (-2, 0),
        (0, 0),
        (0.25, 0.08),
        (0.5, 0.3),
        (0.75, 0.65),
        (1, 1),
        (1.5, 1.5),
        (2, 1.8),
        (3, 2.1),
        (4, 2.2),
    ),
    "Effect of Attractiveness on Exit": _table(
        (-2, 8), (-1, 6), (0, 3), (0.5, 1.7), (1, 1), (2, 0.6), (4, 0.5)
    ),
    "Effect of Confidence on Exit": _table(
        (0, 3.5), (0.3, 2.6), (0.5, 2), (0.7, 1.5), (0.85, 1.18), (1, 1)
    ),
    "Effect of Enforcement on Wrongful Penalties": _table(
        (0, 0), (0.3, 0.02), (0.5, 0.07), (0.6, 0.15), (0.7, 0.3), (0.85, 0.6), (1, 1)
    ),
    "Effect of Enforcement on Compliance Burden": _table(
        (0, 0), (0.3, 0.05), (0.5, 0.15), (0.7, 0.4), (0.85, 0.7), (1, 1)
    ),
    "Effect of Trust on Strictness Response": _table(
        (0, 1), (0.3, 0.8), (0.5, 0.4), (0.6, 0.15), (0.7, 0), (1, 0)
    ),
    "Effect of Deposit Burden on Entry": _table(
        (0, 1),
        (0.1, 0.9),
        (0.25, 0.72),
        (0.5, 0.5),
        (1, 0.25),
        (1.5, 0.12),
        (2, 0.06),
        (5, 0.01),
        (10, 0),
    ),
    "Indicated Seller Confidence": _table(
        (0, 1), (0.25, 0.93), (0.5, 0.83), (1, 0.65), (2, 0.45), (3, 0.32), (5, 0.2)
    ),
    "Effect of Trust on Referrals": _table(
        (0, 0), (0.3, 0.25), (0.5, 0.6), (0.7, 0.85), (0.85, 0.95), (1, 1)
    ),
    "Effect of Trust on Conversion": _table(
        (0, 0), (0.2, 0.25), (0.4, 0.62), (0.6, 0.85), (0.7, 0.9), (0.8, 0.95), (0.9, 0.98), (1, 1)
    ),
    "Effect of Selection on Attractiveness": _table(
        (0, 0),
        (0.001, 0.03),
        (0.005, 0.07),
        (0.01, 0.1),
        (0.02, 0.14),
        (0.05, 0.22),
        (0.1, 0.32),
        (0.2, 0.46),
        (0.35, 0.63),
        (0.5, 0.76),
        (0.75, 0.9),
        (1, 1),
        (1.5, 1.2),
        (2, 1.36),
        (3, 1.55),
        (4, 1.65),
    ),
    "Effect of Price on Attractiveness": _table(
        (0, 1.5),
        (0.5, 1.3),
        (0.8, 1.1),
        (1, 1),
        (1.25, 0.75),
        (1.5, 0.5),
        (2, 0.2),
        (3, 0.05),
        (5, 0),
    ),
    "Effect of Capability on Attractiveness": _table(
        (0, 0.7), (0.5, 0.9), (1, 1), (2, 1.1), (4, 1.15)
    ),
    "Effect of Logistics on Delivery Experience": _table(
        (0, 0.75), (0.5, 0.85), (1, 0.92), (2, 0.97), (4, 1)
    ),
    "Effect of Experience on Trust Updating": _table(
        (0, 0), (0.2, 0.4), (0.5, 0.8), (1, 1), (3, 1)
    ),
    "Effect of Cash on Ad Spending": _table(
        (0, 0), (0.2, 0.1), (0.4, 0.45), (0.6, 0.85), (0.8, 0.98), (1, 1), (2, 1)
    ),
    "Effect of Market Prize on Competitor Investment": _table(
        (0, 0.6), (0.25, 0.85), (0.5, 1), (0.75, 1.1), (1, 1.2)
    ),
}

#: The state vector of one member: each stock (13) and SMOOTH (3), in the order of the
#: engine's state vector (PySD's, by Python name), so that an adaptive solve here takes the
#: same steps as the ensemble's. Scalars by index, subscripted ones by a (High, Low) slice.
STATES: dict[str, int | slice] = {
    "Active Buyers": 0,
    "Active Sellers": slice(1, 3),
    "Buyer Trust": 3,
    "Competitor Capability": 4,
    "Logistics Capability": 5,
    "Members": 6,
    "Platform Capability": 7,
    "Platform Cash": 8,
    "Potential Buyers": 9,
    "Potential Sellers": slice(10, 12),
    "Seller Confidence": 12,
    "Seller Deposits Held": 13,
    "Traffic": 14,
    "Marketplace Openness": 15,
    "Order Handling Capacity": 16,
    "Perceived Seller Profit": slice(17, 19),
}
S = 19

#: The times at which a STEP or PULSE of the model switches (PULSE: start and end).
STEP_TIMES = (
    "Membership Start Time",
    "Qualification Change Time",
    "Deposit Start Time",
    "Deposit End Time",
    "Ad Stop Time",
    "Competitor Entry Time",
    "Marketplace Switch Time",
    "Supply Cost Shock Time",
)


def _lookup(name: str, x):
    return np.interp(x, *LOOKUPS[name])


def _zidz(num, den):
    """Vensim's ZIDZ as PySD has it: 0 where |den| < 1e-6."""
    ok = np.abs(den) >= SMALL_VENSIM
    return np.where(ok, num / np.where(ok, den, 1.0), 0.0)


def _pair_sum(x):
    """SUM over Quality of a (2, N) quantity, added High + Low as xarray does."""
    return x[0] + x[1]


class FlywheelNumpy:
    """The model for N members: `params` maps constant names to a value for all members or
    one per member ((N,) arrays; (N, 2) for constants subscripted by Quality)."""

    def __init__(
        self, params: Mapping[str, float | np.ndarray] | None = None, exact_time: bool = False
    ):
        params = dict(params or {})
        unknown = set(params) - set(DEFAULTS)
        if unknown:
            raise KeyError(f"not constants of the model: {sorted(unknown)}")
        self.exact_time = exact_time
        self.n = self._members(params)
        self.c = {
            name: self._constant(name, params.get(name, default))
            for name, default in DEFAULTS.items()
        }
        self._constant_terms()

    @staticmethod
    def _members(params) -> int:
        sizes = set()
        for name, value in params.items():
            shape = np.shape(value)
            if isinstance(DEFAULTS[name], tuple):
                if len(shape) == 2:
                    sizes.add(shape[0])
            elif shape:
                sizes.add(shape[0])
        if len(sizes) > 1:
            raise ValueError(f"parameters disagree on the number of members: {sorted(sizes)}")
        return sizes.pop() if sizes else 1

    def _constant(self, name: str, value) -> np.ndarray | float:
        value = np.asarray(value, dtype=float)
        if isinstance(DEFAULTS[name], tuple):
            # (2,) shared by all members, or (N, 2) per member -> (2, 1) or (2, N)
            return value.reshape(2, 1) if value.ndim == 1 else value.T.copy()
        return float(value) if value.ndim == 0 else value

    def _constant_terms(self) -> None:
        """Auxiliaries that depend on constants only, computed once."""
        c = self.c
        self.ranking_multiplier = (
            1 + c["Ranking Weight on Quality"] * c["Ranking Quality Advantage"]
        )
        self.wrongful_effect = _lookup(
            "Effect of Enforcement on Wrongful Penalties", c["Enforcement Intensity"]
        )
        self.removal_fraction = (
            c["Enforcement Intensity"] * c["Violation Removal Rate"]
            + c["Wrongful Penalty Rate"] * self.wrongful_effect
        )
        self.compliance_burden = _lookup(
            "Effect of Enforcement on Compliance Burden", c["Enforcement Intensity"]
        )
        self.member_churn_multiplier = 1 - c["Membership Benefit"] * c["Member Loyalty Strength"]

    # -- time functions -------------------------------------------------------------
    def _step(self, t: float, tstep, exact: bool):
        on = t >= tstep if exact else t + TIME_STEP / 2 > tstep
        return np.where(on, 1.0, 0.0)

    def _pulse(self, t: float, start, width, exact: bool):
        first = start if exact else start - SMALL_VENSIM
        return np.where((first <= t) & (t < start + width), 1.0, 0.0)

    def breakpoints(self) -> list[float]:
        """The STEP and PULSE times inside the run, as `model_breakpoints` finds them."""
        c = self.c
        times = {float(x) for name in STEP_TIMES for x in np.ravel(c[name])}
        for start in np.unique(c["Funding Round Time"]):
            for width in np.unique(c["Funding Round Duration"]):
                times.update((float(start), float(start + width)))
        return sorted(t for t in times if INITIAL_TIME < t < FINAL_TIME)

    # -- equations -------------------------------------------------------------------
    def _variables(self, t: float, x: np.ndarray, exact: bool) -> dict[str, np.ndarray]:
        """Every variable the flows and outputs need, at time t and states x (S, N)."""
        c = self.c
        pb, ab, members = (
            x[STATES[name]] for name in ("Potential Buyers", "Active Buyers", "Members")
        )
        potential_sellers, active_sellers = (
            x[STATES["Potential Sellers"]],
            x[STATES["Active Sellers"]],
        )
        confidence, traffic, trust, cash = (
            x[STATES[name]]
            for name in ("Seller Confidence", "Traffic", "Buyer Trust", "Platform Cash")
        )
        held, capability, logistics, rival = (
            x[STATES[name]]
            for name in (
                "Seller Deposits Held",
                "Platform Capability",
                "Logistics Capability",
                "Competitor Capability",
            )
        )
        perceived_profit, capacity, openness = (
            x[STATES[name]]
            for name in (
                "Perceived Seller Profit",
                "Order Handling Capacity",
                "Marketplace Openness",
            )
        )
        v: dict[str, np.ndarray] = {}

        # policy switches
        membership_active = self._step(t, c["Membership Start Time"], exact)
        qualification_step = self._step(t, c["Qualification Change Time"], exact)
        deposit_active = np.where(
            c["Deposit End Time"] > c["Deposit Start Time"],
            self._step(t, c["Deposit Start Time"], exact)
            - self._step(t, c["Deposit End Time"], exact),
            0.0,
        )
        ad_active = 1 - self._step(t, c["Ad Stop Time"], exact)
        competitor_presence = self._step(t, c["Competitor Entry Time"], exact)
        v["Marketplace Switch"] = self._step(t, c["Marketplace Switch Time"], exact)
        funding_pulse = self._pulse(t, c["Funding Round Time"], c["Funding Round Duration"], exact)

        # attractiveness and choice
        total_buyers = ab + members
        penetration = _zidz(total_buyers, c["Addressable Market"])
        sourcing_dependence = 1 - openness * (1 - c["Residual Sourcing Dependence"])
        supply_shock = (
            c["Supply Cost Shock Size"]
            * self._step(t, c["Supply Cost Shock Time"], exact)
            * sourcing_dependence
        )
        relative_price = c["Price Level"] * (1 + supply_shock * c["Cost Pass Through"])
        total_active_sellers = _pair_sum(active_sellers)
        selection_ratio = (
            total_active_sellers
            * (1 + openness * c["Marketplace Selection Bonus"])
            / c["Reference Selection"]
        )
        attractiveness = (
            _lookup("Effect of Selection on Attractiveness", selection_ratio)
            * _lookup("Effect of Price on Attractiveness", relative_price)
            * _lookup("Effect of Capability on Attractiveness", capability)
        )
        choice_share = attractiveness / (attractiveness + rival + c["Substitute Attractiveness"])
        conversion = (
            c["Maximum Conversion Rate"]
            * _lookup("Effect of Trust on Conversion", trust)
            * choice_share
        )

        # traffic and orders
        cash_adequacy = (cash + c["Credit Line"]) / c["Credit Line"]
        ad_spend = (
            c["Ad Budget"] * ad_active * _lookup("Effect of Cash on Ad Spending", cash_adequacy)
        )
        paid_traffic = ad_spend / c["Cost per Click"]
        buyer_visits = (ab + members * c["Member Visit Multiplier"]) * c["Visits per Active Buyer"]
        organic_traffic = (
            total_buyers
            * c["Referral Visits per Buyer"]
            * _lookup("Effect of Trust on Referrals", trust)
        )
        indicated_traffic = buyer_visits + paid_traffic + organic_traffic
        prospect_traffic = traffic * _zidz(paid_traffic + organic_traffic, indicated_traffic)
        returning_traffic = traffic * _zidz(buyer_visits, indicated_traffic)
        adoption = (
            prospect_traffic
            * conversion
            * _zidz(pb, c["Addressable Market"])
            / c["Orders per New Buyer"]
        )
        orders = returning_traffic * conversion + adoption * c["Orders per New Buyer"]
        gmv = orders * c["Average Order Value"]
        v.update(
            {
                "Indicated Traffic": indicated_traffic,
                "Buyer Adoption": adoption,
                "Orders": orders,
                "GMV": gmv,
                "Ad Spend": ad_spend,
            }
        )

        # buyers: churn and membership
        churn_fraction = (
            c["Normal Buyer Churn Fraction"]
            * _lookup(
                "Effect of Choice Share on Churn", choice_share / c["Reference Choice Share"]
            )
            * _lookup("Effect of Trust on Churn", trust)
            * _lookup("Effect of Logistics on Churn", logistics)
            * _lookup("Effect of Penetration on Churn", penetration)
        )
        spend = c["Visits per Active Buyer"] * conversion * c["Average Order Value"]
        member_value = (
            c["Membership Benefit"]
            * spend
            * _lookup("Effect of Logistics on Membership Value", logistics)
        )
        value_share = _zidz(member_value, member_value + c["Membership Fee"])
        v["Buyer Churn"] = ab * churn_fraction
        v["Member Churn"] = members * churn_fraction * self.member_churn_multiplier
        v["Membership Joining"] = (
            ab
            * c["Membership Uptake Fraction"]
            * membership_active
            * _lookup("Effect of Member Value on Uptake", value_share)
        )
        v["Member Lapse"] = members * (
            c["Normal Member Lapse Fraction"]
            * _lookup("Effect of Member Value on Lapse", value_share)
            + (1 - membership_active) / c["Membership Wind Down Time"]
        )

        # sellers
        squeeze = supply_shock * (1 - c["Cost Pass Through"])
        aov = c["Average Order Value"]
        contribution = aov * (1 + squeeze) * c["Seller Gross Margin"] - aov * (
            c["Take Rate"] + squeeze
        )
        ranked_exposure = active_sellers * self.ranking_multiplier
        total_ranked = _pair_sum(ranked_exposure)
        orders_per_seller = _zidz(orders, total_ranked) * self.ranking_multiplier
        strictness = np.minimum(
            1,
            c["Qualification Strictness"]
            + (c["Qualification Strictness Late"] - c["Qualification Strictness"])
            * qualification_step
            + c["Qualification Response to Trust"]
            * _lookup("Effect of Trust on Strictness Response", trust),
        )
        compliance_cost = (
            c["Full Enforcement Compliance Cost"] * self.compliance_burden
            + c["Full Qualification Cost"] * strictness
        )
        v["Seller Profit"] = (
            orders_per_seller * contribution - c["Seller Fixed Cost"] - compliance_cost
        )
        seller_attractiveness = perceived_profit / c["Reference Seller Profit"]
        effective_deposit = c["Seller Deposit"] * deposit_active
        entry_fraction = (
            c["Normal Seller Entry Fraction"]
            * _lookup("Effect of Attractiveness on Entry", seller_attractiveness)
            * (1 - strictness * c["Qualification Rejection Weight"])
            * _lookup(
                "Effect of Deposit Burden on Entry",
                effective_deposit / c["Seller Working Capital"],
            )
            * confidence
        )
        exit_fraction = (
            c["Normal Seller Exit Fraction"]
            * _lookup("Effect of Confidence on Exit", confidence)
            * _lookup("Effect of Attractiveness on Exit", seller_attractiveness)
            + strictness / c["Qualification Review Time"] * c["Qualification Rejection Weight"]
            + self.removal_fraction
        )
        v["Seller Entry by Quality"] = potential_sellers * entry_fraction
        v["Seller Exit by Quality"] = active_sellers * exit_fraction
        policy_burden = (
            effective_deposit / c["Reference Seller Capital"]
            + c["Wrongful Penalty Burden Weight"] * self.wrongful_effect
        )
        indicated_confidence = _lookup("Indicated Seller Confidence", policy_burden)
        v["Confidence Change"] = (
            np.maximum(0, indicated_confidence - confidence) / c["Confidence Recovery Time"]
            - np.maximum(0, confidence - indicated_confidence) / c["Confidence Loss Time"]
        )

        # trust
        delivered_quality = _zidz(
            _pair_sum(ranked_exposure * c["Product Quality"]), total_ranked
        ) * _lookup("Effect of Logistics on Delivery Experience", logistics)
        updating = _lookup(
            "Effect of Experience on Trust Updating",
            _zidz(orders, total_buyers * c["Normal Orders per Buyer"]),
        )
        v["Trust Change"] = (
            np.maximum(0, delivered_quality - trust) * updating / c["Trust Building Time"]
            - np.maximum(0, trust - delivered_quality) * updating / c["Trust Erosion Time"]
        )

        # money
        commission = gmv * c["Take Rate"]
        fee_revenue = members * c["Membership Fee"]
        revenue = commission + fee_revenue
        removals = _pair_sum(active_sellers * self.removal_fraction)
        average_deposit = _zidz(held, total_active_sellers)
        forfeits = average_deposit * removals
        v["Logistics Spending"] = c["Logistics Investment"] * revenue
        v["Innovation Spending"] = c["Innovation Investment"] * revenue
        v["Cash Change"] = (
            commission
            + fee_revenue
            + c["Investor Funding"] * funding_pulse / c["Funding Round Duration"]
            + forfeits
            - ad_spend
            - v["Logistics Spending"]
            - v["Innovation Spending"]
            - (
                c["Fixed Operating Cost"]
                + c["Variable Cost per Order"] * orders
                + c["Capacity Cost per Order"] * capacity
            )
            - members * c["Membership Benefit"] * c["Benefit Cost per Member"]
        )
        v["Deposits Change"] = (
            _pair_sum(v["Seller Entry by Quality"]) * effective_deposit
            - (
                average_deposit * (_pair_sum(v["Seller Exit by Quality"]) - removals)
                + held * (1 - deposit_active) / c["Deposit Refund Time"]
            )
            - forfeits
        )
        v["Competitor Investment Rate"] = (
            competitor_presence
            * (
                c["Competitor Strength"]
                * _lookup("Effect of Market Prize on Competitor Investment", penetration)
            )
            / c["Competitor Capability Lifetime"]
        )
        return v

    def _derivatives(self, t: float, x: np.ndarray, exact: bool) -> np.ndarray:
        c = self.c
        v = self._variables(t, x, exact)
        dx = np.empty_like(x)

        def state(name):
            return x[STATES[name]]

        adoption, churn, member_churn = v["Buyer Adoption"], v["Buyer Churn"], v["Member Churn"]
        joining, lapse = v["Membership Joining"], v["Member Lapse"]
        entry, exit_ = v["Seller Entry by Quality"], v["Seller Exit by Quality"]
        rates = {
            "Potential Buyers": churn + member_churn - adoption,
            "Active Buyers": adoption + lapse - churn - joining,
            "Members": joining - lapse - member_churn,
            "Potential Sellers": exit_ - entry,
            "Active Sellers": entry - exit_,
            "Seller Confidence": v["Confidence Change"],
            "Traffic": (v["Indicated Traffic"] - state("Traffic")) / c["Traffic Adjustment Time"],
            "Buyer Trust": v["Trust Change"],
            "Platform Cash": v["Cash Change"],
            "Seller Deposits Held": v["Deposits Change"],
            "Platform Capability": v["Innovation Spending"] / c["Cost per Capability Point"]
            - state("Platform Capability") / c["Capability Lifetime"],
            "Logistics Capability": v["Logistics Spending"] / c["Cost per Logistics Point"]
            - state("Logistics Capability") / c["Logistics Asset Lifetime"],
            "Competitor Capability": v["Competitor Investment Rate"]
            - state("Competitor Capability") / c["Competitor Capability Lifetime"],
            # SMOOTH: a first-order stock adjusting toward its input
            "Perceived Seller Profit": (v["Seller Profit"] - state("Perceived Seller Profit"))
            / c["Seller Profit Perception Time"],
            "Order Handling Capacity": (v["Orders"] - state("Order Handling Capacity"))
            / c["Capacity Adjustment Time"],
            "Marketplace Openness": (v["Marketplace Switch"] - state("Marketplace Openness"))
            / c["Marketplace Transition Time"],
        }
        for name, rate in rates.items():
            dx[STATES[name]] = rate
        return dx

    # -- public interface ------------------------------------------------------------
    def y0(self) -> np.ndarray:
        """Initial states, flat and member-major. PySD's time functions, as the engine
        initialises the model before it switches them."""
        c, n = self.c, self.n
        x = np.zeros((S, n))
        market, initial_buyers = c["Addressable Market"], c["Initial Active Buyers"]
        initial_sellers = np.minimum(
            c["Initial Active Sellers"] * c["Initial Seller Mix"], c["Seller Pool"]
        )
        initial = {
            "Potential Buyers": np.maximum(0, market - initial_buyers),
            "Active Buyers": np.minimum(initial_buyers, market),
            "Potential Sellers": c["Seller Pool"] - initial_sellers,
            "Active Sellers": initial_sellers,
            "Seller Confidence": 1,
            "Buyer Trust": c["Initial Buyer Trust"],
            "Platform Cash": c["Initial Platform Cash"],
            "Platform Capability": c["Initial Platform Capability"],
            "Logistics Capability": c["Initial Logistics Capability"],
            "Marketplace Openness": self._step(
                INITIAL_TIME, c["Marketplace Switch Time"], exact=False
            ),
        }
        for name, value in initial.items():  # Members, deposits and the rival start at 0
            x[STATES[name]] = value
        # Traffic starts at its indicated level; the SMOOTHs at their inputs, which need it.
        x[STATES["Traffic"]] = self._variables(INITIAL_TIME, x, False)["Indicated Traffic"]
        v = self._variables(INITIAL_TIME, x, exact=False)
        x[STATES["Perceived Seller Profit"]] = v["Seller Profit"]
        x[STATES["Order Handling Capacity"]] = v["Orders"]
        return x.T.ravel()

    def rhs(self, t: float, y: np.ndarray) -> np.ndarray:
        """dy/dt for the flat, member-major state vector."""
        x = y.reshape(self.n, S).T
        return self._derivatives(t, x, self.exact_time).T.ravel()

    def outputs(self, t: float, y: np.ndarray, names: Sequence[str]) -> dict[str, np.ndarray]:
        """Variables at (t, y), one (N,) array per column named as PySD names them
        (``Active Sellers[High]``): the states, and the variables `_variables` computes."""
        x = y.reshape(self.n, S).T
        v = None
        out = {}
        for name in names:
            if name in STATES:
                value = x[STATES[name]]
            else:
                if v is None:
                    v = self._variables(t, x, self.exact_time)
                value = np.asarray(v[name])
            rows = value.shape[0] if value.ndim == 2 else 1
            value = np.broadcast_to(value, (rows, self.n))
            if rows == len(QUALITY):
                out.update({f"{name}[{q}]": value[k].copy() for k, q in enumerate(QUALITY)})
            else:
                out[name] = value[0].copy()
        return out


def time_grid(
    t0: float = INITIAL_TIME,
    t1: float = FINAL_TIME,
    dt: float = TIME_STEP,
    saveper: float = SAVEPER,
) -> tuple[list[float], list[bool]]:
    """The times PySD's Euler loop visits (adding TIME STEP each step) and whether it
    reports each: every SAVEPER from INITIAL TIME within 1e-5 TIME STEP, the end included."""
    prec = dt * RPREC
    t, times, report = t0, [], []
    while True:
        delay = t - t0
        times.append(t)
        report.append(bool(delay % saveper < prec or -delay % saveper < prec))
        if not t + prec < t1:
            return times, report
        t += dt


def _collect(model: FlywheelNumpy, times, states, outputs) -> dict[str, np.ndarray]:
    columns: dict[str, list] = {}
    for t, y in zip(times, states):
        for name, value in model.outputs(t, y, outputs).items():
            columns.setdefault(name, []).append(value)
    return {name: np.stack(values, axis=1) for name, values in columns.items()}


def _report_times() -> list[float]:
    times, report = time_grid()
    return [t for t, keep in zip(times, report) if keep]


def euler(params: Mapping, outputs: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Euler at TIME STEP for all members, as PySD's run(): the saved times and, per output
    column, an (N, T) array."""
    model = FlywheelNumpy(params)
    times, report = time_grid()
    y = model.y0()
    states = []
    with np.errstate(all="ignore"):  # as the engine: non-finite values show in the outputs
        for t, keep in zip(times[:-1], report):
            if keep:
                states.append(y)
            y = y + model.rhs(t, y) * TIME_STEP
        if report[-1]:
            states.append(y)
        save = _report_times()
        return np.array(save), _collect(model, save, states, outputs)


def adaptive(
    params: Mapping,
    outputs: Sequence[str],
    method: str = "RK45",
    rtol: float = 1e-6,
    atol: float = 1e-6,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """All members as one system in lock-step: SciPy's explicit RK (`method` "RK45",
    "RK23" or "DOP853", its own RMS norm over all members' states), piecewise between the
    STEP/PULSE times, each segment evaluated from inside. Returns the saved times and
    (N, T) arrays per column."""
    from scipy.integrate import solve_ivp

    model = FlywheelNumpy(params, exact_time=True)
    times = _report_times()
    save = np.array(times)
    edges = [INITIAL_TIME, *model.breakpoints(), FINAL_TIME]
    y = model.y0()
    saved: dict[float, np.ndarray] = {}
    with np.errstate(all="ignore"):
        for a, b in itertools.pairwise(edges):
            inside = b - 1e-11 * max(1.0, abs(b))

            def fun(t, yy, _inside=inside):
                return model.rhs(min(t, _inside), yy)

            here = [float(t) for t in save[(save >= a) & (save <= b)] if t not in saved]
            sol = solve_ivp(
                fun, (a, b), y, method=method, rtol=rtol, atol=atol, t_eval=sorted(set(here) | {b})
            )
            if sol.status != 0:
                raise RuntimeError(f"{method} stopped at t={sol.t[-1]:g}: {sol.message}")
            saved.update({float(t): col for t, col in zip(sol.t, sol.y.T) if float(t) in here})
            y = sol.y[:, -1]
        return save, _collect(model, times, [saved[t] for t in times], outputs)
