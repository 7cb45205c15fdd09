"""Element symbols and atomic numbers (IUPAC periodic table, Z = 1…92).

The fused HAADF model of Schwartz 2024 eq. 1 weights each element by its atomic
number Z; this table turns symbols from study and phantom files into Z and rejects
unknown symbols with a clear message.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tomosweep.errors import InputError

_SYMBOLS = (
    "H He Li Be B C N O F Ne Na Mg Al Si P S Cl Ar K Ca Sc Ti V Cr Mn Fe Co Ni Cu Zn "
    "Ga Ge As Se Br Kr Rb Sr Y Zr Nb Mo Tc Ru Rh Pd Ag Cd In Sn Sb Te I Xe Cs Ba La Ce "
    "Pr Nd Pm Sm Eu Gd Tb Dy Ho Er Tm Yb Lu Hf Ta W Re Os Ir Pt Au Hg Tl Pb Bi Po At Rn "
    "Fr Ra Ac Th Pa U"
).split()

ATOMIC_NUMBER: dict[str, int] = {sym: z for z, sym in enumerate(_SYMBOLS, start=1)}


def atomic_number(symbol: str) -> int:
    """Z of an element symbol (case-sensitive, e.g. ``"Co"``)."""
    try:
        return ATOMIC_NUMBER[symbol]
    except (KeyError, TypeError):
        hint = ""
        if isinstance(symbol, str) and symbol.capitalize() in ATOMIC_NUMBER:
            hint = f" (did you mean {symbol.capitalize()!r}?)"
        raise InputError(f"unknown element symbol {symbol!r}{hint}; use a chemical symbol H…U") from None


def atomic_numbers(elements: Iterable[str | int | float]) -> tuple[float, ...]:
    """Z for each entry: symbols are looked up, numbers must be positive."""
    out = []
    for e in elements:
        if isinstance(e, str):
            out.append(float(atomic_number(e)))
        else:
            z = float(e)
            if not z > 0:
                raise InputError(f"atomic numbers must be positive, got {e!r}")
            out.append(z)
    return tuple(out)


def check_symbols(elements: Sequence[str]) -> tuple[str, ...]:
    """Validate a list of element symbols (non-empty, known, no duplicates)."""
    elements = tuple(elements)
    if not elements:
        raise InputError("at least one element is required")
    for e in elements:
        atomic_number(e)
    dup = sorted({e for e in elements if elements.count(e) > 1})
    if dup:
        raise InputError(f"duplicate element symbols: {dup}")
    return elements
