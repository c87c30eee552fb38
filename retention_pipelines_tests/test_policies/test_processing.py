"""The record of processing built from the policy file: each domain's time limits in the database
and in the archive beside its purpose, lawful basis, data and recipients; and one sentence per
field a domain leaves out."""

from __future__ import annotations

import yaml

from retention_pipelines.policies import default_policy_path, load_policies
from retention_pipelines.policies.model import PROCESSING_FIELDS, parse_duration
from retention_pipelines.policies.processing import COLUMNS, NOT_ARCHIVED, missing_fields, record_of_processing


def test_every_domain_has_its_line_with_both_time_limits_as_the_file_gives_them():
    written = yaml.safe_load(default_policy_path().read_text())["domains"]
    entries = record_of_processing(load_policies())
    assert [entry.domain for entry in entries] == list(written)
    for entry in entries:
        policy = written[entry.domain]
        assert parse_duration(entry.retain_for) == parse_duration(policy["retain_for"])
        assert entry.counted_from == policy["clock_column"]
        archive = policy["archive"]
        if archive["enabled"]:
            assert parse_duration(entry.archive_keep_for) == parse_duration(archive["keep_for"])
        else:
            assert entry.archive_keep_for == NOT_ARCHIVED
        assert entry.purpose == " ".join(policy["purpose"].split())
        assert list(entry.data_categories) == policy["data_categories"]
        assert list(entry.recipients) == policy["recipients"]
    by_domain = {entry.domain: entry for entry in entries}
    assert by_domain["meal_plans"].archive_keep_for == "3650d"  # ten years of PDFs, in the record
    assert by_domain["meal_plans"].data == "table meal_plans; the objects named by pdf_blob_key"
    assert by_domain["quiz_responses"].data == "table quiz_responses"
    assert by_domain["quiz_responses"].special_category_condition == "Art. 9(2)(a) explicit consent"
    assert by_domain["quiz_responses"].lawful_basis == "Art. 6(1)(a) consent"
    assert by_domain["email_blacklist"].lawful_basis.startswith("Art. 6(1)(f) legitimate interests — ")
    assert by_domain["meal_plans"].lawful_basis.startswith("Art. 6(1)(b) contract; Art. 6(1)(c) legal obligation — ")


def test_cells_join_lists_and_leave_what_is_missing_blank(tmp_path):
    data = yaml.safe_load(default_policy_path().read_text())
    for name in PROCESSING_FIELDS:
        data["domains"]["quiz_responses"].pop(name)
    data["domains"]["magic_link_tokens"]["recipients"] = []
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    entries = {entry.domain: entry for entry in record_of_processing(load_policies(path))}
    quiz = entries["quiz_responses"].cells()
    assert list(quiz) == list(COLUMNS)
    assert [quiz[name] for name in ("purpose", "lawful_basis", "special_category_condition", "data_categories",
                                    "recipients")] == [None] * 5
    assert entries["magic_link_tokens"].cells()["recipients"] == "none"
    plans = entries["meal_plans"]
    assert plans.cells()["data_categories"] == "; ".join(plans.data_categories)
    assert plans.fields()["data_categories"] == list(plans.data_categories)  # JSON keeps the list


def test_a_missing_field_is_one_sentence_naming_domain_and_field(tmp_path):
    assert missing_fields(load_policies()) == []
    data = yaml.safe_load(default_policy_path().read_text())
    data["domains"]["quiz_responses"].pop("lawful_basis")
    data["domains"]["email_blacklist"].pop("purpose")
    data["domains"]["email_blacklist"].pop("recipients")
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert missing_fields(load_policies(path)) == [
        "domain quiz_responses, field lawful_basis: missing; the record of processing names the lawful basis "
        "(Art. 6(1); with the Art. 9(2) condition for health data)",
        "domain email_blacklist, field purpose: missing; the record of processing names the purpose of the "
        "processing (GDPR Art. 30(1)(b))",
        "domain email_blacklist, field recipients: missing; the record of processing names the categories of "
        "recipients the data is disclosed to (Art. 30(1)(d)); [] for none",
    ]
