"""The 20 Oregon Wildlife classes: the archive's exact folder names, sorted."""

# Alphabetical, as the Kaggle archive's folders sort; the label id is the index here.
CLASS_NAMES: tuple[str, ...] = (
    "bald_eagle",
    "black_bear",
    "bobcat",
    "canada_lynx",
    "columbian_black-tailed_deer",
    "cougar",
    "coyote",
    "deer",
    "elk",
    "gray_fox",
    "gray_wolf",
    "mountain_beaver",
    "nutria",
    "raccoon",
    "raven",
    "red_fox",
    "ringtail",
    "sea_lions",
    "seals",
    "virginia_opossum",
)

assert list(CLASS_NAMES) == sorted(CLASS_NAMES) and len(set(CLASS_NAMES)) == 20
