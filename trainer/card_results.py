"""Model card sections about results: per source, risk-coverage and the "unsure" threshold,
cross-source comparisons, int8 against fp32, and the breeds the model confuses most.

Every number comes from the JSON that evaluate, export and compare wrote; nothing is typed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from catbreed_desktop.core.sorting.folder_names import NOT_CAT_FOLDER, UNSURE_FOLDER


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def pct(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.1%}"


def num(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def sources_section(figures: Mapping, measured_with: str) -> list[str]:
    """One row per data source, then a per-breed table for each source."""
    sources = figures.get("sources") or {}
    if not sources:
        return []
    lines = [
        "",
        "### Per data source",
        "",
        f"Measured with {measured_with}. The model chooses among all its breeds; a source's macro F1 "
        "averages over the breeds that source has test photos of. The last two columns leave out the "
        "test photos label cleaning flagged (a secondary figure; the others use the labels as given).",
        "",
    ]
    rows = []
    for name, s in sources.items():
        clean = num(s["clean_breeds_macro_f1"]) if "clean_breeds_macro_f1" in s else "no breed marked noisy"
        rows.append(
            [
                name,
                str(s["test"]["count"]),
                str(len(s["breeds"])),
                num(s["test"]["accuracy"]),
                num(s["test"]["macro_f1"]),
                clean,
                f"{num(s['without_flagged']['accuracy'])} ({s['without_flagged']['flagged_left_out']} left out)",
                num(s["without_flagged"]["macro_f1"]),
            ]
        )
    lines += table(
        [
            "Source",
            "Test photos",
            "Breeds",
            "Accuracy",
            "Macro F1",
            "Macro F1, breeds not marked noisy",
            "Accuracy without flagged",
            "Macro F1 without flagged",
        ],
        rows,
    )
    for name, s in sources.items():
        noisy = set(s.get("noisy_breeds", []))
        lines += ["", f"#### {name}", ""]
        lines += table(
            ["Breed", "Precision", "Recall", "F1", "Test photos"],
            [
                [
                    breed + (" (noisy labels)" if breed in noisy else ""),
                    num(r["precision"], 3),
                    num(r["recall"], 3),
                    num(r["f1"], 3),
                    str(r["support"]),
                ]
                for breed, r in s["per_breed"].items()
            ],
        )
    return lines


def coverage_section(figures: Mapping, measured_with: str) -> list[str]:
    """The default threshold and its rule, and filed share / filed precision per threshold."""
    decision, rows = figures.get("decision"), figures.get("risk_coverage")
    if not decision or not rows:
        return []
    validation = decision["validation"]
    names = ["all", *rows[0]["per_source"]]
    header = ["Threshold"]
    for name in names:
        header += [f"{name}: filed", f"{name}: right"]
    body = []
    for row in rows:
        cells = [f"{row['threshold']:.2f}" + (" (default)" if row["is_default"] else "")]
        for name in names:
            r = row["overall"] if name == "all" else row["per_source"][name]
            cells += [pct(r["coverage"]), pct(r["precision"])]
        body.append(cells)
    lines = [
        "",
        "## Sorting: the unsure threshold and coverage",
        "",
        f"Default unsure threshold: **{decision['min_confidence']:.2f}**, chosen on the validation split: "
        f"{decision['rule']}. There it files {pct(validation['coverage'])} of "
        f"{validation['photos']} photos, {pct(validation['precision'])} of them right. bundle.json records it "
        "as `decision`; the app uses it unless the person picks another.",
        "",
        f"Test split, measured with {measured_with}, sorted as the app does: *{NOT_CAT_FOLDER}* when the "
        f"not-a-cat detector rejects a photo, *{UNSURE_FOLDER}* when the calibrated top-1 probability is "
        "below the threshold, else the breed folder. *filed*: share of photos put in a breed folder; "
        "*right*: share of those in the right one.",
        "",
    ]
    lines += table(header, body)
    flagged = [
        f"{name} {pct(r['not_cat'])}"
        for name, r in [("all", rows[0]["overall"]), *rows[0]["per_source"].items()]
    ]
    lines.append(f"\nTest cats sent to *{NOT_CAT_FOLDER}* (any threshold): " + ", ".join(flagged) + ".")
    return lines


def comparisons_section(comparisons: Sequence[Mapping]) -> list[str]:
    """One table per `compare` result: each checkpoint on the same photos."""
    if not comparisons:
        return []
    lines = ["", "## Cross-source comparisons"]
    for result in comparisons:
        lines += [
            "",
            f"### {result['title']}",
            "",
            f"{result['photos']} {result['split']} photos of {', '.join(result['sources'])}, of the "
            f"{len(result['breeds'])} breeds {', '.join(result['breeds'])}; each model chooses among its own "
            "breeds (a prediction outside these breeds is a mistake).",
        ]
        seen = {n: c for n, c in result.get("left_out_seen_in_training", {}).items() if c}
        if seen:
            lines.append(
                "Left out because a model saw them in training or validation: "
                + ", ".join(f"{c} ({n})" for n, c in seen.items())
                + "."
            )
        rows = [
            [
                name,
                str(r["labels"]),
                num(r["overall"]["accuracy"]),
                num(r["overall"]["macro_f1"]),
                num(r["without_flagged"]["macro_f1"]),
                pct(r["predicted_outside_set"]),
            ]
            for name, r in result["checkpoints"].items()
        ]
        lines += [""] + table(
            [
                "Model",
                "Breeds it chooses among",
                "Accuracy",
                "Macro F1",
                "Macro F1 without flagged photos",
                "Predicted a breed outside the set",
            ],
            rows,
        )
    return lines


def precision_section(bundle_metrics: Mapping) -> list[str]:
    """The shipped int8 model beside the fp32 checkpoint, figure by figure."""
    fp32 = bundle_metrics.get("fp32_pytorch")
    if not fp32:
        return []

    def figures(m: Mapping) -> list[str]:
        default = next((r for r in m.get("risk_coverage", []) if r["is_default"]), None)
        return [
            num(m["test"]["accuracy"]),
            num(m["test"]["macro_f1"]),
            num(m["calibration"]["test_ece_after"]),
            pct(m["ood"].get("test_cats_flagged_not_cat")),
            num(m["decision"]["min_confidence"], 2) if m.get("decision") else "n/a",
            pct(default["overall"]["coverage"]) if default else "n/a",
            pct(default["overall"]["precision"]) if default else "n/a",
        ]

    precision = bundle_metrics.get("precision", "shipped")
    return [
        "",
        f"### {precision} against fp32",
        "",
        f"bundle.json's headline metrics are the shipped {precision} model's own; the fp32 checkpoint's "
        "are kept under `fp32_pytorch`.",
        "",
        *table(
            [
                "Model",
                "Accuracy",
                "Macro F1",
                "ECE after temperature",
                "Test cats flagged not a cat",
                "Default threshold",
                "Filed at default",
                "Right at default",
            ],
            [[f"Shipped {precision}", *figures(bundle_metrics)], ["fp32 (PyTorch)", *figures(fp32)]],
        ),
    ]


def confusions_section(pairs: Sequence[Mapping]) -> list[str]:
    """The most-confused breed pairs of the test confusion matrix."""
    if not pairs:
        return []
    lines = [
        "",
        "### Known confusions",
        "",
        "The breed pairs mixed up most often on the test split (from the confusion matrix, both directions):",
        "",
    ]
    lines += table(
        ["Breeds", "Mistakes", "A taken for B", "B taken for A", "Share of the pair's test photos"],
        [
            [
                f"{p['breeds'][0]} / {p['breeds'][1]}",
                str(p["mistakes"]),
                str(p["a_as_b"]),
                str(p["b_as_a"]),
                pct(p["share_of_pair_photos"]),
            ]
            for p in pairs
        ],
    )
    return lines
