import pytest
import yaml

from magic.catalog import NUM_CRITERIA, CatalogError, available_catalogs, catalog_for_labels, load_catalog

EXPECTED = {
    "ham10000": ["actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
                 "melanocytic_nevus", "melanoma", "vascular_lesion"],
    "pad-ufes-20": ["BCC", "SCC", "ACK", "SEK", "MEL", "NEV"],
    "pbc": ["basophil", "eosinophil", "erythroblast", "ig", "lymphocyte", "monocyte", "neutrophil", "platelet"],
    "fitzpatrick17k-magic20": [
        "acne", "actinic_keratosis", "allergic_contact_dermatitis", "basal_cell_carcinoma", "eczema",
        "erythema_multiforme", "folliculitis", "granuloma_annulare", "keloid", "lichen_planus", "lupus_erythematosus",
        "melanoma", "mycosis_fungoides", "pityriasis_rosea", "prurigo_nodularis", "psoriasis", "sarcoidosis",
        "scabies", "squamous_cell_carcinoma", "vitiligo"],
}


def test_every_expected_catalog_ships():
    assert set(EXPECTED) <= set(available_catalogs())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_catalog_is_valid_complete_and_unique(name):
    catalog = load_catalog(name)
    assert sorted(catalog.ids) == sorted(EXPECTED[name])
    assert len(set(catalog.ids)) == len(catalog.ids)
    assert len({c.display_name for c in catalog.conditions}) == len(catalog.conditions)
    assert catalog.version and catalog.source and catalog.license
    for condition in catalog.conditions:
        items = catalog.checklist(condition.id)
        assert len(items) == NUM_CRITERIA
        assert all(len(item.split(": ", 1)[1]) > 10 for item in items)


def test_lookup_by_synonym_and_skin_tone_variant():
    catalog = load_catalog("fitzpatrick17k-magic20")
    psoriasis = catalog.get("Psoriasis")
    assert catalog.get(psoriasis.dataset_label) is psoriasis
    toned = [c for c in catalog.conditions if c.colour_by_skin_tone.get("dark")]
    assert toned, "skin-tone colour variants are expected for some conditions"
    dark_items = catalog.checklist(toned[0].id, skin_tone="dark")
    assert toned[0].colour_by_skin_tone["dark"] in " ".join(dark_items)
    with pytest.raises(KeyError, match="not in catalog"):
        catalog.get("common cold")


def test_a_label_with_underscores_for_spaces_finds_the_catalog_and_its_condition():
    """Dataset labels write spaces as underscores ("actinic_keratoses" for the synonym "actinic keratoses"): the
    catalog chosen for such labels must also answer to them."""
    labels = ["actinic_keratoses", "Basal_Cell_Carcinomas", "melanoma"]
    catalog = catalog_for_labels(labels)
    assert catalog is not None and catalog.name == "ham10000"
    assert catalog.get("actinic_keratoses") is catalog.get("actinic keratoses") is catalog.get("akiec")
    assert catalog.get("Basal_Cell_Carcinomas") is catalog.get("bcc")
    with pytest.raises(KeyError, match="not in catalog"):
        catalog.get("common_cold")


def _write(tmp_path, data):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_condition_with_four_items_is_rejected(tmp_path):
    data = yaml.safe_load((load_catalog.__globals__["CATALOGS_DIR"] / "pbc.yaml").read_text())
    del data["conditions"][0]["checklist"]["granules"]
    with pytest.raises(CatalogError, match="checklist keys"):
        load_catalog(_write(tmp_path, data))


def test_duplicate_names_are_rejected(tmp_path):
    data = yaml.safe_load((load_catalog.__globals__["CATALOGS_DIR"] / "pbc.yaml").read_text())
    data["conditions"][1]["synonyms"] = [data["conditions"][0]["display_name"]]
    with pytest.raises(CatalogError, match="already used"):
        load_catalog(_write(tmp_path, data))


def test_unknown_catalog_lists_the_shipped_ones():
    with pytest.raises(CatalogError, match="shipped catalogs"):
        load_catalog("dermnet")


def test_a_dataset_class_list_finds_its_catalog_and_prompt_template():
    ham = catalog_for_labels(EXPECTED["ham10000"])
    assert ham.name == "ham10000" and ham.prompt_template.format(name="melanoma") == \
        "a dermoscopy image of a melanoma skin lesion"
    assert catalog_for_labels(["ig", "Basophil", "platelet"]).name == "pbc"  # a subset, any case
    # pad-ufes-20 (6 conditions), ham10000 (7) and fitzpatrick17k-magic20 (20) all name these: the most specific wins
    assert catalog_for_labels(["melanoma", "basal_cell_carcinoma"]).name == "pad-ufes-20"
    assert catalog_for_labels(["basophil", "melanoma"]) is None  # no one catalog names both
    assert catalog_for_labels(["disc", "square"]) is None


def test_a_prompt_template_without_name_is_rejected(tmp_path):
    data = yaml.safe_load((load_catalog.__globals__["CATALOGS_DIR"] / "pbc.yaml").read_text())
    data["prompt_template"] = "a microscopy image of a white blood cell"
    with pytest.raises(CatalogError, match="prompt_template"):
        load_catalog(_write(tmp_path, data))
