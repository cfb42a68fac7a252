"""The CatBreed trainer (`python -m trainer`): prepare data, train, evaluate and export model bundles.

Each subcommand lives in its own module (`dataset`, `baseline`, `train`, `evaluate`, `export`,
`report`); they share the work folder layout below, the app's preprocessing
(`catbreed_desktop.core.photos.preprocessing`) and its bundle format (`catbreed_desktop.core.bundle`).

    WORKDIR/manifest.csv, labels.json, summary.json    prepare
    WORKDIR/baseline/metrics.json                      baseline
    WORKDIR/checkpoints/{best,last}, runs/<run>/       train
    WORKDIR/eval/metrics.json, ood.npz, *.png          evaluate
    WORKDIR/export/metrics.json                        export (the bundle goes to --out)
    WORKDIR/head_refit/<model sha>.npz                 refit-head (the bundle's embeddings)
"""
