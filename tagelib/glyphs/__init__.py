"""The embedded glyph dataset: category = character, style = font face.

- `charset`  the candidate categories (Latin letters and digits, plus Greek and Cyrillic letters);
- `render`   font coverage through the cmap and rendering with one scale per font;
- `style`    per-style metadata measured from the renders and read from the font, and captions;
- `curate`   legibility, all-caps and near-duplicate filters;
- `split`    seen/unseen categories, shot/eval pools, held-out font families;
- `build`    the command that turns a folder of fonts into the shipped artefact;
- `dataset`  the loader that returns torch tensors by split.
"""
