"""Where corpus content comes from: each benchmark and each published teacher-output file mixdistill knows, pinned to
a repository commit, with its license, a BibTeX citation and the SHA-256 of every file.

The same table serves two purposes: `mixdistill data fetch` downloads the built-in tasks' files at these commits and
checks their hashes, and the dataset card names the source (repository, commit, license, citation) of every replayed
teacher file, recognised by its hash. The pins are those of the data manifest the project was built against.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class SourceFile:
    path: str  # under the data dir (`<source dir>/<path in repo>`)
    repo_path: str  # path inside the repository at `commit`
    sha256: str


@dataclass(frozen=True)
class Source:
    key: str  # data-dir folder
    title: str
    kind: str  # "benchmark" | "teacher outputs" | "method"
    repository: str  # owner/name on GitHub
    commit: str
    license: str  # SPDX id
    citation: str  # BibTeX
    files: tuple[SourceFile, ...] = ()
    note: str = ""
    model: str = ""  # teacher outputs: the model that wrote them, and its provider
    model_provider: str = ""

    @property
    def url(self) -> str:
        return f"https://github.com/{self.repository}/tree/{self.commit}"

    def raw_url(self, f: SourceFile, base: str = "https://raw.githubusercontent.com") -> str:
        return f"{base.rstrip('/')}/{self.repository}/{self.commit}/{f.repo_path}"


def _same(root: str, *paths: str, sums: dict[str, str]) -> tuple[SourceFile, ...]:
    return tuple(SourceFile(f"{root}/{p}", p, sums[p]) for p in paths)


MIXED_DISTILLATION = Source(
    key="mixed-distillation", title="Mixed Distillation (the method this corpus follows)", kind="method",
    repository="", commit="", license="", files=(),
    citation="""@article{li2023mixed,
  title   = {Mixed Distillation Helps Smaller Language Model Better Reasoning},
  author  = {Li, Chenglin and Chen, Qianglong and Li, Liangyue and Wang, Caiyu and Li, Yicheng and Chen, Zulong and Zhang, Yin},
  journal = {arXiv preprint arXiv:2312.10730},
  year    = {2023}
}""",
)

SVAMP = Source(
    key="svamp", title="SVAMP", kind="benchmark", repository="arkilpatel/SVAMP",
    commit="689d7ccac74b9983a2ac7cc3b264f441b99e7c53", license="MIT",
    files=(SourceFile("svamp/SVAMP.json", "SVAMP.json", "5be77703a6d891ae476d7c082787ad361392aa02453b132516cdd5f4e7934e3e"),),
    citation="""@inproceedings{patel-etal-2021-nlp,
  title     = {Are {NLP} Models really able to Solve Simple Math Word Problems?},
  author    = {Patel, Arkil and Bhattamishra, Satwik and Goyal, Navin},
  booktitle = {Proceedings of NAACL-HLT 2021},
  pages     = {2080--2094},
  year      = {2021}
}""",
)

GSM8K = Source(
    key="gsm8k", title="GSM8K", kind="benchmark", repository="openai/grade-school-math",
    commit="3101c7d5072418e28b9008a6636bde82a006892c", license="MIT",
    files=_same("gsm8k", "grade_school_math/data/train.jsonl", "grade_school_math/data/test.jsonl", sums={
        "grade_school_math/data/train.jsonl": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
        "grade_school_math/data/test.jsonl": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    }),
    citation="""@article{cobbe2021gsm8k,
  title   = {Training Verifiers to Solve Math Word Problems},
  author  = {Cobbe, Karl and Kosaraju, Vineet and Bavarian, Mohammad and Chen, Mark and Jun, Heewoo and Kaiser, Lukasz and Plappert, Matthias and Tworek, Jerry and Hilton, Jacob and Nakano, Reiichiro and Hesse, Christopher and Schulman, John},
  journal = {arXiv preprint arXiv:2110.14168},
  year    = {2021}
}""",
)

_ASDIV_FILES = ("dataset/ASDiv.xml", *(f"dataset/nfolds/asdiv-a/fold{i}.txt" for i in range(5)))
ASDIV = Source(
    key="asdiv", title="ASDiv", kind="benchmark", repository="chaochun/nlu-asdiv-dataset",
    commit="883f90a9a65bf00304ba8f37423910fe743abc47", license="CC-BY-NC-4.0",
    note="license stated in the repository's README (no LICENSE file): non-commercial use only",
    files=_same("asdiv", *_ASDIV_FILES, sums=dict(zip(_ASDIV_FILES, (
        "ef8904068482919ac48c8eeaaf6df344b8a308ba66d048c2d4d87eab82dc4929",
        "1e4e8c670e461e9d59beee13e64e28d7f92e3be8ba6766d3bbeb40818e03e8d6",
        "81bb372c89696d8d0a253d8ac73500208a801c35670112d682c2f2306ef35fd2",
        "56ffc96a9eead77224f782d7c4c84205c21079b3588b08e4a68d2deabf50febc",
        "68733651260332fa6ae89155aa5e15d20a4b11833023712d0a9b2a2d06551e54",
        "103d2091eab4ee825e55353af817af006ddd2fee4948b0ef7fa1df0f6a33723b",
    )))),
    citation="""@inproceedings{miao-etal-2020-diverse,
  title     = {A Diverse Corpus for Evaluating and Developing {E}nglish Math Word Problem Solvers},
  author    = {Miao, Shen-yun and Liang, Chao-Chun and Su, Keh-Yih},
  booktitle = {Proceedings of ACL 2020},
  pages     = {975--984},
  year      = {2020}
}""",
)

STRATEGYQA = Source(
    key="strategyqa", title="StrategyQA", kind="benchmark", repository="eladsegal/strategyqa",
    commit="1ba1e97452e189569357876f2854b01357ffbe37", license="MIT",
    note="an unofficial 90/10 split of the official StrategyQA (AllenAI) train set",
    files=_same("strategyqa", "data/strategyqa/train.json", "data/strategyqa/dev.json", sums={
        "data/strategyqa/train.json": "0f72560b8a6fad3db847d2f1a7524fb087297843bb45a8d3245ffd68cbe0de12",
        "data/strategyqa/dev.json": "0d94842ffb022db8fd5ecd2168b785d5cf67f6faf64f665476bad544a3eb9dde",
    }),
    citation="""@article{geva2021strategyqa,
  title   = {Did {A}ristotle Use a Laptop? {A} Question Answering Benchmark with Implicit Reasoning Strategies},
  author  = {Geva, Mor and Khashabi, Daniel and Segal, Elad and Khot, Tushar and Roth, Dan and Berant, Jonathan},
  journal = {Transactions of the Association for Computational Linguistics},
  volume  = {9},
  pages   = {346--361},
  year    = {2021}
}""",
)

DSS_PALM = Source(
    key="distilling-step-by-step", title="distilling-step-by-step: PaLM-540B CoT completions for SVAMP",
    kind="teacher outputs", repository="cnalty/distilling-step-by-step-rag",
    commit="1a3053c0b6587fd4f2fa02edad115c41bdf7eeda", license="Apache-2.0",
    model="PaLM-540B", model_provider="Google",
    note="the unzipped datasets.zip of google-research/distilling-step-by-step (Apache-2.0), committed by a fork "
    "(folder palm/ there, llm/ upstream)",
    files=(
        SourceFile("distilling-step-by-step/datasets/svamp/llm/train_CoT_0.json", "datasets/svamp/palm/train_CoT_0.json",
                   "9aa813b5653131e53bfe0477fa2cb3f90fb3d1b7a5226433218cb7b85998f094"),
        SourceFile("distilling-step-by-step/datasets/svamp/llm/train_CoT_1.json", "datasets/svamp/palm/train_CoT_1.json",
                   "db0131252436d0487ff8642d94abad23636c080258da60097d5c6f15b1e32639"),
        SourceFile("distilling-step-by-step/datasets/svamp/llm/test_CoT_0.json", "datasets/svamp/palm/test_CoT_0.json",
                   "fd536719c09b0cc97bfeee5775b212f8e4541ffe012bcd99c893a99e7e46df37"),
        SourceFile("distilling-step-by-step/datasets/svamp/svamp_train.json", "datasets/svamp/svamp_train.json",
                   "641fc0f69864e1376fc2e29675affd15fa641f3b40279dcd6a595f3780f4e721"),
        SourceFile("distilling-step-by-step/datasets/svamp/svamp_test.json", "datasets/svamp/svamp_test.json",
                   "b73cba2c53b1e9b1c8aa512a8928c12d0524d1acba560f8c526756185044054c"),
    ),
    citation="""@inproceedings{hsieh-etal-2023-distilling,
  title     = {Distilling Step-by-Step! Outperforming Larger Language Models with Less Training Data and Smaller Model Sizes},
  author    = {Hsieh, Cheng-Yu and Li, Chun-Liang and Yeh, Chih-Kuan and Nakhost, Hootan and Fujii, Yasuhisa and Ratner, Alex and Krishna, Ranjay and Lee, Chen-Yu and Pfister, Tomas},
  booktitle = {Findings of the Association for Computational Linguistics: ACL 2023},
  pages     = {8003--8017},
  year      = {2023}
}""",
)

POT_CODEX = Source(
    key="program-of-thoughts", title="Program-of-Thoughts: Codex PoT programs", kind="teacher outputs",
    repository="wenhuchen/Program-of-Thoughts", commit="850399c3eff8c37458a9d642c4a98df287f50f3a", license="MIT",
    model="code-davinci-002", model_provider="OpenAI",
    files=_same("program-of-thoughts", "outputs/svamp_s0_e-1_11_24_14_38.jsonl", "outputs/gsm8K_s0_e-1_11_17_10_20.jsonl",
                sums={
                    "outputs/svamp_s0_e-1_11_24_14_38.jsonl": "47114bfa222f12ef84238d5b68b7804aa461da6e9afb9b80a57c29be75747321",
                    "outputs/gsm8K_s0_e-1_11_17_10_20.jsonl": "902e008f3059b9d868456de45b90f1012bc61d5fcdb7556deb0d1830970109eb",
                }),
    citation="""@article{chen2023program,
  title   = {Program of Thoughts Prompting: Disentangling Computation from Reasoning for Numerical Reasoning Tasks},
  author  = {Chen, Wenhu and Ma, Xueguang and Wang, Xinyi and Cohen, William W.},
  journal = {Transactions on Machine Learning Research},
  year    = {2023}
}""",
)

SOURCES: dict[str, Source] = {s.key: s for s in (SVAMP, GSM8K, ASDIV, STRATEGYQA, DSS_PALM, POT_CODEX)}
# a built-in task's `source` (the Problem.source value) -> its Source
BY_REPOSITORY: dict[str, Source] = {s.repository: s for s in SOURCES.values()}
_BY_HASH: dict[str, tuple[Source, SourceFile]] = {f.sha256: (s, f) for s in SOURCES.values() for f in s.files}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def identify(path: Path) -> tuple[Source, SourceFile] | None:
    """The known source of a file, recognised by its SHA-256 (its name and folder do not matter)."""
    return _BY_HASH.get(sha256_file(path)) if Path(path).is_file() else None


@dataclass(frozen=True)
class Identified:
    sources: list[tuple[Source, list[SourceFile]]] = field(default_factory=list)
    unknown: list[Path] = field(default_factory=list)


def identify_all(paths: list[Path]) -> Identified:
    """Group files by known source; files no source holds are listed as unknown."""
    found: dict[str, tuple[Source, list[SourceFile]]] = {}
    unknown = []
    for p in paths:
        hit = identify(p)
        if hit is None:
            unknown.append(p)
        else:
            found.setdefault(hit[0].key, (hit[0], []))[1].append(hit[1])
    return Identified(list(found.values()), unknown)
