"""The record of processing's fields of a domain (purpose, lawful_basis, data_categories,
recipients): good values load, cited as the law cites them; bad ones are refused with a message
naming the domain, the field and what is accepted."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from retention_pipelines.policies import PolicyError, default_policy_path, load_policies
from retention_pipelines.policies.model import ARTICLE_6, ARTICLE_9, PROCESSING_FIELDS, LawfulBasis


def shipped_data() -> dict:
    return yaml.safe_load(default_policy_path().read_text())


def load_with(tmp_path, domain: str = "quiz_responses", **fields):
    """The shipped file with `fields` set on one domain (None: the field taken out)."""
    data = shipped_data()
    entry = data["domains"][domain]
    for name, value in fields.items():
        if value is None:
            entry.pop(name, None)
        else:
            entry[name] = value
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_policies(path), path


def refusal(tmp_path, **fields) -> str:
    with pytest.raises(PolicyError) as caught:
        load_with(tmp_path, **fields)
    return str(caught.value)


def test_the_shipped_file_fills_in_every_field_for_every_domain():
    policies = load_policies()
    for policy in policies.domains.values():
        assert policy.missing_processing_fields == [], policy.name
        assert policy.purpose and policy.data_categories and policy.recipients
    quiz = policies.domains["quiz_responses"].lawful_basis
    assert (quiz.article_6, quiz.article_9) == (["consent"], "explicit_consent")  # health data, Art. 9(2)(a)
    assert policies.domains["magic_link_tokens"].lawful_basis.article_9 is None
    assert policies.domains["meal_plans"].lawful_basis.article_6 == ["contract", "legal_obligation"]
    assert policies.domains["email_blacklist"].lawful_basis.article_6 == ["legitimate_interests"]


def test_good_values_load_on_one_line_and_are_cited_as_the_law_cites_them(tmp_path):
    policies, _ = load_with(
        tmp_path, purpose="  Tailoring\n  the plan  ",
        lawful_basis={"article_6": ["contract", "legitimate_interests"], "article_9": "explicit_consent",
                      "explanation": "preventing\nfraud"},
        data_categories=["e-mail address", " health data "], recipients=[])
    quiz = policies.domains["quiz_responses"]
    assert quiz.purpose == "Tailoring the plan"
    assert quiz.data_categories == ["e-mail address", "health data"]
    assert quiz.recipients == []  # disclosed to no one: stated, not missing
    assert quiz.missing_processing_fields == []
    assert quiz.lawful_basis.cited() == ("Art. 6(1)(b) contract; Art. 6(1)(f) legitimate interests — "
                                         "preventing fraud")
    assert quiz.lawful_basis.cited_condition() == "Art. 9(2)(a) explicit consent"


def test_a_single_basis_may_be_written_as_a_word(tmp_path):
    policies, _ = load_with(tmp_path, lawful_basis={"article_6": "consent"})
    assert policies.domains["quiz_responses"].lawful_basis.article_6 == ["consent"]
    assert policies.domains["quiz_responses"].lawful_basis.cited_condition() is None


def test_every_field_may_be_left_out_and_is_then_named_missing(tmp_path):
    policies, _ = load_with(tmp_path, **dict.fromkeys(PROCESSING_FIELDS))
    assert policies.domains["quiz_responses"].missing_processing_fields == list(PROCESSING_FIELDS)
    assert policies.domains["meal_plans"].missing_processing_fields == []


@pytest.mark.parametrize(("fields", "expected"), [
    ({"lawful_basis": {"article_6": ["consnet"]}},
     "field lawful_basis.article_6: 'consnet' is not a lawful basis of GDPR Art. 6(1): write one or more of consent, "
     "contract, legal_obligation, vital_interests, public_task, legitimate_interests"),
    ({"lawful_basis": {"article_6": ["consent"], "article_9": "consent"}},
     "field lawful_basis.article_9: 'consent' is not a condition of GDPR Art. 9(2): write one of explicit_consent,"),
    ({"lawful_basis": {"article_6": [{"consent": True}]}},
     "field lawful_basis.article_6: {'consent': True} is not a lawful basis of GDPR Art. 6(1)"),
    ({"lawful_basis": {"article_6": ["consent", "consent"]}},
     "field lawful_basis.article_6: a basis is listed twice: name each once"),
    ({"lawful_basis": {"article_6": []}}, "field lawful_basis.article_6: List should have at least 1 item"),
    ({"lawful_basis": {"article_9": "explicit_consent"}}, "field lawful_basis.article_6: Field required"),
    ({"lawful_basis": {"article_6": ["legitimate_interests"]}},
     "field lawful_basis: explanation: legitimate_interests needs one, naming the law that imposes the obligation"),
    ({"lawful_basis": {"article_6": ["legal_obligation", "legitimate_interests"], "explanation": "  "}},
     "field lawful_basis.explanation: is empty: write the text, or leave the field out"),
    ({"lawful_basis": {"article_6": ["consent"], "special_category": "health"}},
     "field lawful_basis.special_category: unknown key"),
    ({"lawful_basis": "consent"}, "field lawful_basis: Input should be a valid dictionary"),
    ({"purpose": " \n "}, "field purpose: is empty: write the text, or leave the field out"),
    ({"purpose": "x" * 1001}, "field purpose: is 1001 characters long; at most 1000"),
    ({"purpose": 42}, "field purpose: 42 is not text"),
    ({"data_categories": []}, "field data_categories: is empty: list at least one category, or leave the field out"),
    ({"data_categories": ["e-mail address", "e-mail  address"]},
     "field data_categories: e-mail address listed twice: each category once"),
    ({"data_categories": "e-mail address"}, "field data_categories: Input should be a valid list"),
    ({"recipients": [7]}, "field recipients.0: Input should be a valid string"),
    ({"recipients": ["y" * 201]}, "field recipients: is 201 characters long; at most 200"),
])
def test_bad_values_are_refused_naming_domain_field_and_what_is_accepted(tmp_path, fields, expected):
    message = refusal(tmp_path, **fields)
    assert f"domain quiz_responses, {expected}" in message, message
    assert message.startswith(str(tmp_path / "policies.yaml"))


@given(bases=st.lists(st.sampled_from(sorted(ARTICLE_6)), min_size=1, unique=True),
       condition=st.none() | st.sampled_from(sorted(ARTICLE_9)),
       explanation=st.none() | st.text(alphabet=st.characters(codec="utf-8", categories=["L", "N", "Zs"]),
                                       min_size=1, max_size=40).filter(str.strip))
def test_a_lawful_basis_cites_each_basis_and_condition_once_by_its_point(bases, condition, explanation):
    needs_explanation = bool({"legal_obligation", "legitimate_interests"} & set(bases))
    data = {"article_6": bases, "article_9": condition, "explanation": explanation}
    if needs_explanation and explanation is None:
        with pytest.raises(ValueError, match="explanation: .* needs one"):
            LawfulBasis.model_validate(data)
        return
    basis = LawfulBasis.model_validate(data)
    cited = basis.cited()
    for name, point in ARTICLE_6.items():
        assert cited.count(f"Art. 6(1)({point}) ") == (name in bases)
    assert cited.startswith(f"Art. 6(1)({ARTICLE_6[bases[0]]}) {bases[0].replace('_', ' ')}")
    assert cited.endswith(f" — {' '.join(explanation.split())}" if explanation else bases[-1].replace("_", " "))
    assert basis.cited_condition() == (None if condition is None else
                                       f"Art. 9(2)({ARTICLE_9[condition]}) {condition.replace('_', ' ')}")
