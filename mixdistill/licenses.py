"""The license of a corpus, derived from the licenses of everything that contributed rows.

Written by hand because no library answers the one question needed here (which single license, if any, covers a
mix of sources); the table is deliberately small: a license it does not know is an error, never a guess.
The most restrictive license wins; sources whose terms cannot both hold under one license (share-alike next to
non-commercial, two different licenses of the same strength) give `other`, with the reason spelled out.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixdistill.errors import MixdistillError


class LicenseError(MixdistillError):
    pass


@dataclass(frozen=True)
class License:
    spdx: str
    hub: str  # the Hub's license id
    rank: int  # higher = more restrictive
    non_commercial: bool = False
    share_alike: bool = False


KNOWN: dict[str, License] = {
    lic.spdx.lower(): lic
    for lic in (
        License("CC0-1.0", "cc0-1.0", 0),
        License("MIT", "mit", 1),
        License("BSD-2-Clause", "bsd-2-clause", 1),
        License("BSD-3-Clause", "bsd-3-clause", 1),
        License("Apache-2.0", "apache-2.0", 2),
        License("CC-BY-4.0", "cc-by-4.0", 2),
        License("CC-BY-SA-4.0", "cc-by-sa-4.0", 3, share_alike=True),
        License("GPL-3.0", "gpl-3.0", 3, share_alike=True),
        License("CC-BY-NC-4.0", "cc-by-nc-4.0", 4, non_commercial=True),
        License("CC-BY-NC-SA-4.0", "cc-by-nc-sa-4.0", 5, non_commercial=True, share_alike=True),
    )
}


def lookup(value: str | None, source: str) -> License:
    """The license of one source; unknown or missing is an error naming the source."""
    lic = KNOWN.get(str(value or "").strip().lower())
    if lic is None:
        raise LicenseError(
            f"source {source}: license {value!r} is not one mixdistill can put on a card "
            f"(known: {', '.join(x.spdx for x in KNOWN.values())}); give the source's real license"
        )
    return lic


@dataclass(frozen=True)
class Derived:
    id: str  # Hub license id, or "other"
    spdx: str  # the winning license, or the list
    note: str  # one sentence for the card


def derive(sources: list[tuple[str, str]]) -> Derived:
    """(source name, license) pairs -> the corpus license."""
    if not sources:
        raise LicenseError("no source contributes rows, so no license can be derived")
    by_license: dict[str, list[str]] = {}
    for name, value in sources:
        by_license.setdefault(lookup(value, name).spdx, []).append(name)
    lics = sorted((KNOWN[s.lower()] for s in by_license), key=lambda x: (x.rank, x.spdx))
    listing = "; ".join(f"{lic.spdx}: {', '.join(sorted(set(by_license[lic.spdx])))}" for lic in lics)
    top = lics[-1]
    if len(lics) == 1:
        return Derived(top.hub, top.spdx, f"Every source is licensed {top.spdx} ({listing}).")
    peers = [x for x in lics[:-1] if x.rank == top.rank]
    sa_vs_nc = [x for x in lics if x.share_alike and not top.share_alike] or (
        top.share_alike and any(x.non_commercial and not x.share_alike for x in lics))
    if peers or sa_vs_nc:
        why = (f"{peers[0].spdx} and {top.spdx} are different licenses of the same strength" if peers else
               "share-alike and non-commercial terms cannot both be met by one license")
        return Derived(
            "other", ", ".join(x.spdx for x in lics),
            f"The sources' licenses conflict ({why}): {listing}. Each row is covered by the licenses of its own "
            "sources (its task's benchmark and its teacher's outputs); there is no single license for the whole.",
        )
    extra = " Non-commercial use only." if top.non_commercial else ""
    return Derived(top.hub, top.spdx,
                   f"The most restrictive source license, {top.spdx}, applies to the whole ({listing}).{extra}")
