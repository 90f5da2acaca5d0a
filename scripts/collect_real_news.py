"""Collect real news documents from two public git mirrors and write their sentences, without the network.

    .venv/bin/python scripts/collect_real_news.py corpus --state-dept SD_GIT --wikipedia WIKI_GIT \\
        --out data/annotation/real_news_sentences.jsonl
    .venv/bin/python scripts/collect_real_news.py pool --state-dept SD_GIT --wikipedia WIKI_GIT \\
        --labelled data/annotation/real_news_sentences.jsonl --seeds data/eval/seeds.jsonl \\
        --out data/pool/real_news_pool.jsonl

``SD_GIT`` is a git directory of ``markschaver/State-Department-PR`` (its ``data.rss`` history holds U.S.
State Department press releases, public domain); ``WIKI_GIT`` one of ``fordred/wikinews`` (daily copies of
English Wikipedia's *Portal:Current events*, CC BY-SA 4.0). Both are read with ``git``; bare clones work.

Documents: State Department releases (briefing, interview and remarks transcripts and schedules left out)
paired with the partner countries named in the title (else the body); Wikipedia "International relations"
stories paired from their "A–B relations" headings (else the two countries they name); and, as articles on
none of the four topics, each week's Sports / Arts and culture / Science and technology / Health and
environment items without topical words or two countries. Sentences come from the project's splitter
(``train.data.sentences.split_text``); those under 4 words, in capitals, with a URL, boilerplate, or
repeated in 3 or more documents are dropped.

``corpus`` rebuilds the sentences of the labelled corpus (up to 3 releases per partner country and 2 stories
per pair, chosen with seed 21, plus off-topic weeks for a 20% share of documents) in its raw format, one row
per sentence with its ``pairs``: byte for byte ``data/annotation/real_news_sentences.jsonl``.

``pool`` writes unlabelled sentences for ``tagger select`` from the documents the corpus left unused: the
next ``--releases-per-country`` releases of each partner country and ``--stories-per-pair`` stories of each
pair in the same shuffled order, and off-topic weeks (the Disasters and accidents section, without
explosions, shootings, fuel or power) for ``--off-topic-share`` of the documents. One row per sentence and
target (``id``, ``doc_id``, ``text``, ``target``, ``title``, ``date``, ``source``, ``licence``); an
off-topic week gets one of the pool's pairs, fixed per document. Left out: documents whose URL or title
(a story's page and heading) is in ``--labelled``, sentences whose text is there or earlier in the pool,
and sentences near a seed sentence or a labelled one (``train.data.leakage``, exact or character 5-gram
Jaccard at or above ``--leak-threshold``). The counts of what was left out are printed with the summary.
"""

from __future__ import annotations

import argparse
import collections
import datetime
import hashlib
import html
import json
import random
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from email.utils import parsedate_to_datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from train.data.leakage import find_leaks, normalise  # noqa: E402
from train.data.sentences import split_text  # noqa: E402

SEED = 21
SD_REPO = "markschaver/State-Department-PR"
WIKI_REPO = "fordred/wikinews"
PUBLIC_DOMAIN = "public-domain"
CC_BY_SA = "CC BY-SA 4.0"
DEFAULT_TARGET = "closer Iran–Iraq ties"
PREFIX = {"state-dept": "sd", "wp-current-events": "wce", "wp-current-events-offtopic": "wco"}

# canonical country -> names, demonyms and capitals that stand for it (the longest match wins)
COUNTRIES: dict[str, list[str]] = {
    "United States": ["United States", "U.S.", "US", "USA", "America", "American", "Americans", "Washington"],
    "Afghanistan": ["Afghanistan", "Afghan"], "Albania": ["Albania", "Albanian"], "Algeria": ["Algeria", "Algerian"],
    "Andorra": ["Andorra"], "Angola": ["Angola", "Angolan"], "Antigua and Barbuda": ["Antigua and Barbuda"],
    "Argentina": ["Argentina", "Argentine", "Argentinian"], "Armenia": ["Armenia", "Armenian"],
    "Australia": ["Australia", "Australian"], "Austria": ["Austria", "Austrian"],
    "Azerbaijan": ["Azerbaijan", "Azerbaijani"], "Bahamas": ["Bahamas", "Bahamian"],
    "Bahrain": ["Bahrain", "Bahraini"], "Bangladesh": ["Bangladesh", "Bangladeshi"], "Barbados": ["Barbados"],
    "Belarus": ["Belarus", "Belarusian"], "Belgium": ["Belgium", "Belgian"], "Belize": ["Belize"],
    "Benin": ["Benin", "Beninese"], "Bhutan": ["Bhutan"], "Bolivia": ["Bolivia", "Bolivian"],
    "Bosnia and Herzegovina": ["Bosnia and Herzegovina", "Bosnia", "Bosnian"], "Botswana": ["Botswana"],
    "Brazil": ["Brazil", "Brazilian"], "Brunei": ["Brunei"], "Bulgaria": ["Bulgaria", "Bulgarian"],
    "Burkina Faso": ["Burkina Faso"], "Burundi": ["Burundi"], "Cabo Verde": ["Cabo Verde", "Cape Verde"],
    "Cambodia": ["Cambodia", "Cambodian"], "Cameroon": ["Cameroon", "Cameroonian"], "Canada": ["Canada", "Canadian"],
    "Central African Republic": ["Central African Republic"], "Chad": ["Chad", "Chadian"],
    "Chile": ["Chile", "Chilean"], "China": ["China", "Chinese", "PRC", "Beijing"],
    "Colombia": ["Colombia", "Colombian"], "Comoros": ["Comoros"],
    "Democratic Republic of the Congo": ["Democratic Republic of the Congo", "DRC", "Congolese"],
    "Republic of the Congo": ["Republic of the Congo"], "Costa Rica": ["Costa Rica", "Costa Rican"],
    "Croatia": ["Croatia", "Croatian"], "Cuba": ["Cuba", "Cuban"], "Cyprus": ["Cyprus", "Cypriot"],
    "Czech Republic": ["Czech Republic", "Czechia", "Czech"], "Denmark": ["Denmark", "Danish"],
    "Djibouti": ["Djibouti"], "Dominica": ["Dominica"], "Dominican Republic": ["Dominican Republic", "Dominican"],
    "Ecuador": ["Ecuador", "Ecuadorian"], "Egypt": ["Egypt", "Egyptian"],
    "El Salvador": ["El Salvador", "Salvadoran"], "Equatorial Guinea": ["Equatorial Guinea"],
    "Eritrea": ["Eritrea", "Eritrean"], "Estonia": ["Estonia", "Estonian"], "Eswatini": ["Eswatini"],
    "Ethiopia": ["Ethiopia", "Ethiopian"], "Fiji": ["Fiji", "Fijian"], "Finland": ["Finland", "Finnish"],
    "France": ["France", "French"], "Gabon": ["Gabon", "Gabonese"], "Gambia": ["The Gambia", "Gambia", "Gambian"],
    "Georgia": ["Georgia", "Georgian"], "Germany": ["Germany", "German"], "Ghana": ["Ghana", "Ghanaian"],
    "Greece": ["Greece", "Greek"], "Grenada": ["Grenada"], "Guatemala": ["Guatemala", "Guatemalan"],
    "Guinea": ["Guinea", "Guinean"], "Guinea-Bissau": ["Guinea-Bissau"], "Guyana": ["Guyana", "Guyanese"],
    "Haiti": ["Haiti", "Haitian"], "Honduras": ["Honduras", "Honduran"], "Hungary": ["Hungary", "Hungarian"],
    "Iceland": ["Iceland", "Icelandic"], "India": ["India", "Indian"], "Indonesia": ["Indonesia", "Indonesian"],
    "Iran": ["Iran", "Iranian", "Tehran"], "Iraq": ["Iraq", "Iraqi", "Baghdad"], "Ireland": ["Ireland", "Irish"],
    "Israel": ["Israel", "Israeli"], "Italy": ["Italy", "Italian"],
    "Ivory Coast": ["Côte d’Ivoire", "Cote d'Ivoire", "Côte d'Ivoire", "Ivory Coast", "Ivorian"],
    "Jamaica": ["Jamaica", "Jamaican"], "Japan": ["Japan", "Japanese"], "Jordan": ["Jordan", "Jordanian"],
    "Kazakhstan": ["Kazakhstan", "Kazakh"], "Kenya": ["Kenya", "Kenyan"], "Kiribati": ["Kiribati"],
    "Kosovo": ["Kosovo"], "Kuwait": ["Kuwait", "Kuwaiti"], "Kyrgyzstan": ["Kyrgyzstan", "Kyrgyz"],
    "Laos": ["Laos", "Lao People’s Democratic Republic", "Lao"], "Latvia": ["Latvia", "Latvian"],
    "Lebanon": ["Lebanon", "Lebanese"], "Lesotho": ["Lesotho"], "Liberia": ["Liberia", "Liberian"],
    "Libya": ["Libya", "Libyan"], "Liechtenstein": ["Liechtenstein"], "Lithuania": ["Lithuania", "Lithuanian"],
    "Luxembourg": ["Luxembourg"], "Madagascar": ["Madagascar", "Malagasy"], "Malawi": ["Malawi", "Malawian"],
    "Malaysia": ["Malaysia", "Malaysian"], "Maldives": ["Maldives", "Maldivian"], "Mali": ["Mali", "Malian"],
    "Malta": ["Malta", "Maltese"], "Marshall Islands": ["Marshall Islands", "Marshallese"],
    "Mauritania": ["Mauritania", "Mauritanian"], "Mauritius": ["Mauritius"], "Mexico": ["Mexico", "Mexican"],
    "Micronesia": ["Micronesia", "Micronesian"], "Moldova": ["Moldova", "Moldovan"], "Monaco": ["Monaco"],
    "Mongolia": ["Mongolia", "Mongolian"], "Montenegro": ["Montenegro", "Montenegrin"],
    "Morocco": ["Morocco", "Moroccan"], "Mozambique": ["Mozambique", "Mozambican"],
    "Myanmar": ["Myanmar", "Burma", "Burmese"], "Namibia": ["Namibia", "Namibian"], "Nauru": ["Nauru"],
    "Nepal": ["Nepal", "Nepali", "Nepalese"], "Netherlands": ["Netherlands", "Dutch"],
    "New Zealand": ["New Zealand"], "Nicaragua": ["Nicaragua", "Nicaraguan"], "Niger": ["Niger", "Nigerien"],
    "Nigeria": ["Nigeria", "Nigerian"],
    "North Korea": ["North Korea", "North Korean", "DPRK", "Democratic People’s Republic of Korea"],
    "North Macedonia": ["North Macedonia", "North Macedonian"], "Norway": ["Norway", "Norwegian"],
    "Oman": ["Oman", "Omani"], "Pakistan": ["Pakistan", "Pakistani"], "Palau": ["Palau"],
    "Palestine": ["Palestine", "Palestinian", "Palestinian Authority"], "Panama": ["Panama", "Panamanian"],
    "Papua New Guinea": ["Papua New Guinea"], "Paraguay": ["Paraguay", "Paraguayan"], "Peru": ["Peru", "Peruvian"],
    "Philippines": ["Philippines", "Philippine", "Filipino"], "Poland": ["Poland", "Polish"],
    "Portugal": ["Portugal", "Portuguese"], "Qatar": ["Qatar", "Qatari"], "Romania": ["Romania", "Romanian"],
    "Russia": ["Russia", "Russian", "Russian Federation", "Moscow", "Kremlin"], "Rwanda": ["Rwanda", "Rwandan"],
    "Saint Lucia": ["Saint Lucia"], "Samoa": ["Samoa", "Samoan"], "San Marino": ["San Marino"],
    "Sao Tome and Principe": ["Sao Tome and Principe", "São Tomé and Príncipe"],
    "Saudi Arabia": ["Saudi Arabia", "Saudi"], "Senegal": ["Senegal", "Senegalese"], "Serbia": ["Serbia", "Serbian"],
    "Seychelles": ["Seychelles"], "Sierra Leone": ["Sierra Leone"], "Singapore": ["Singapore", "Singaporean"],
    "Slovakia": ["Slovakia", "Slovak"], "Slovenia": ["Slovenia", "Slovenian"],
    "Solomon Islands": ["Solomon Islands"], "Somalia": ["Somalia", "Somali"],
    "South Africa": ["South Africa", "South African"],
    "South Korea": ["South Korea", "South Korean", "Republic of Korea", "ROK", "Korean"],
    "South Sudan": ["South Sudan", "South Sudanese"], "Spain": ["Spain", "Spanish"],
    "Sri Lanka": ["Sri Lanka", "Sri Lankan"], "Sudan": ["Sudan", "Sudanese"], "Suriname": ["Suriname"],
    "Sweden": ["Sweden", "Swedish"], "Switzerland": ["Switzerland", "Swiss"], "Syria": ["Syria", "Syrian"],
    "Taiwan": ["Taiwan", "Taiwanese"], "Tajikistan": ["Tajikistan", "Tajik"], "Tanzania": ["Tanzania", "Tanzanian"],
    "Thailand": ["Thailand", "Thai"], "Timor-Leste": ["Timor-Leste", "East Timor"], "Togo": ["Togo", "Togolese"],
    "Tonga": ["Tonga", "Tongan"], "Trinidad and Tobago": ["Trinidad and Tobago"], "Tunisia": ["Tunisia", "Tunisian"],
    "Turkey": ["Turkey", "Türkiye", "Turkish", "Turkiye"], "Turkmenistan": ["Turkmenistan", "Turkmen"],
    "Tuvalu": ["Tuvalu"], "Uganda": ["Uganda", "Ugandan"], "Ukraine": ["Ukraine", "Ukrainian", "Kyiv"],
    "United Arab Emirates": ["United Arab Emirates", "UAE", "Emirati"],
    "United Kingdom": ["United Kingdom", "UK", "U.K.", "Britain", "British", "Great Britain"],
    "Uruguay": ["Uruguay", "Uruguayan"], "Uzbekistan": ["Uzbekistan", "Uzbek"], "Vanuatu": ["Vanuatu"],
    "Vatican": ["Holy See", "Vatican"], "Venezuela": ["Venezuela", "Venezuelan"],
    "Vietnam": ["Vietnam", "Vietnamese", "Viet Nam"], "Yemen": ["Yemen", "Yemeni"], "Zambia": ["Zambia", "Zambian"],
    "Zimbabwe": ["Zimbabwe", "Zimbabwean"],
}
_ALIASES = sorted(((alias, c) for c, aliases in COUNTRIES.items() for alias in aliases), key=lambda x: -len(x[0]))
_COUNTRY_RX = re.compile(r"(?<![\w.])(" + "|".join(re.escape(a) for a, _ in _ALIASES) + r")(?![\w])")
_CANONICAL = dict(_ALIASES)


def countries(text: str) -> list[str]:
    """The countries named in ``text``, in order, once per mention."""
    found = []
    t = text.replace("Indo-Pacific", "").replace("Papua New Guinea", "PapuaNewGuinea_")
    t = t.replace("Equatorial Guinea", "EqGuinea_").replace("Guinea-Bissau", "GuineaBissau_")
    t = t.replace("Georgia Tech", "").replace("Jordan River", "")
    if "Russo-Ukrainian" in t:
        found += ["Russia", "Ukraine"]
    found += [_CANONICAL[m.group(1)] for m in _COUNTRY_RX.finditer(t)]
    for marker, name in [("PapuaNewGuinea_", "Papua New Guinea"), ("EqGuinea_", "Equatorial Guinea"),
                         ("GuineaBissau_", "Guinea-Bissau")]:
        if marker in t:
            found.append(name)
    return found


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=True).stdout


def blobs(repo: Path, specs: list[str]) -> list[bytes]:
    """The contents of ``rev:path`` objects, read through one ``git cat-file --batch``."""
    proc = subprocess.run(
        ["git", "-C", str(repo), "cat-file", "--batch"],
        input="".join(s + "\n" for s in specs).encode(),
        capture_output=True,
        check=True,
    )
    out, pos = [], 0
    data = proc.stdout
    for _ in specs:
        end = data.index(b"\n", pos)
        header = data[pos:end].split()
        if header[-1] == b"missing":
            out.append(b"")
            pos = end + 1
            continue
        size = int(header[2])
        out.append(data[end + 1 : end + 1 + size])
        pos = end + 1 + size + 1
    return out


# ---------------------------------------------------------------- State Department press releases

RSS_NS = {"content": "http://purl.org/rss/1.0/modules/content/", "dc": "http://purl.org/dc/elements/1.1/"}
SKIP_TITLE = re.compile(
    r"public schedule|press briefing|press availability|interview|remarks|at a press|with .* before their meeting"
    r"|conversation with|podcast|op-ed|briefing",
    re.I,
)
DROP_LINE = re.compile(
    r"^(begin text:?|end text\.?|the below is attributable to .*|the following (is|was) (the text of|attributable).*"
    r"|\*\s*\*\s*\*|###|for (further|more) information.*|media note|washington, d\.?c\.?|.*https?://.*"
    r"|.*@state\.gov.*|follow .* on (twitter|facebook).*|(in|for) (immediate )?release.*)$",
    re.I,
)
BYLINE = re.compile(
    r"(Spokesperson|Secretary of State|Secretary|Department of State|Ambassador|Assistant Secretary"
    r"|Bureau of [A-Z].*)$"
)
SPEAKER = re.compile(r"^[A-Z][A-Z .’']{2,40}:")


def rss_items(repo: Path) -> list[dict]:
    """Every item of every committed ``data.rss``, newest version first, once per link."""
    commits = git(repo, "log", "--format=%H", "--", "data.rss").split()
    seen: dict[str, dict] = {}
    for commit, raw in zip(commits, blobs(repo, [f"{c}:data.rss" for c in commits]), strict=True):
        try:
            root = ET.fromstring(raw)
        except ET.ParseError:
            continue
        for item in root.iter("item"):
            link = (item.findtext("link") or "").strip()
            if not link or link in seen:
                continue
            seen[link] = {
                "title": item.findtext("title"),
                "link": link,
                "pubDate": item.findtext("pubDate"),
                "creator": item.findtext("dc:creator", namespaces=RSS_NS),
                "content": item.findtext("content:encoded", namespaces=RSS_NS) or "",
                "commit": commit,
            }
    return list(seen.values())


def html_lines(markup: str) -> list[str]:
    """Block-level lines of an HTML fragment as plain text."""
    markup = re.sub(r"(?is)<(script|style)[^>]*>.*?</\1>", "", markup)
    markup = re.sub(r"(?i)</(p|h\d|li|div|blockquote|tr)>|<br\s*/?>", "\n", markup)
    markup = re.sub(r"<[^>]+>", "", markup)
    markup = html.unescape(markup).replace("\xa0", " ").replace("\u202f", " ")
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in markup.split("\n")]
    return [line for line in lines if line]


def release_document(item: dict) -> dict | None:
    """A release as a document paired with its partner countries; None for transcripts and the like."""
    title = html.unescape(item["title"]).strip()
    if SKIP_TITLE.search(title):
        return None
    creator = (item.get("creator") or "").strip()
    body: list[str] = []
    for i, line in enumerate(html_lines(item["content"])):
        byline = line == creator or (BYLINE.search(line) and len(line.split()) < 14 and not line.endswith("."))
        if (i < 3 and byline) or DROP_LINE.match(line):
            continue
        if SPEAKER.match(line):  # a transcript: "MR PRICE: ..."
            return None
        body.append(line)
    if not body:
        return None
    in_title = [c for c in dict.fromkeys(countries(title)) if c != "United States"]
    in_body = collections.Counter(c for c in countries(" ".join(body)) if c != "United States")
    partners = in_title[:3] if in_title else [c for c, n in in_body.most_common(2) if n >= 2]
    if not partners:
        return None
    pairs = [["United States", c] for c in partners]
    if len(in_title) >= 2:
        pairs.append([in_title[0], in_title[1]])
    return {
        "title": title,
        "lines": [title, *body],
        "date": parsedate_to_datetime(item["pubDate"]).date().isoformat(),
        "pairs": pairs,
        "source": f"github:{SD_REPO} (git history of data.rss, commit {item['commit'][:12]}); original {item['link']}",
        "licence": PUBLIC_DOMAIN,
        "origin": "state-dept",
        "key": partners[0],
    }


# ---------------------------------------------------------------- Wikipedia, Portal:Current events

CITATION = re.compile(r"\s*\[\(\*?[^\]]*?\*?\)\]\([^)]*\)")
LINK = re.compile(r"\[([^\]]*)\]\((?:[^()]|\([^)]*\))*\)")
TOPICAL = re.compile(
    r"\b(oil|gas|pipeline|electricity|power grid|nuclear|military|troops?|army|missiles?|drones?|sanctions?"
    r"|tariffs?|trade|exports?|imports?|minister|president|summit|treaty|embassy|diplomat\w*|war|attack\w*"
    r"|ceasefire|government)\b",
    re.I,
)
OFF_TOPIC_SECTIONS = {
    "Sports", "Arts and culture", "Science and technology", "Arts and Culture", "Science and Technology",
    "Health and environment",
}
# for the pool only (the labelled corpus used every week of the sections above): disasters and accidents, without
# explosions, shootings or fuel and power, which the schema could count as security or energy
POOL_OFF_TOPIC_SECTIONS = {"Disasters and accidents"}
NOT_OFF_TOPIC = re.compile(r"explo|bomb|shoot|gunm[ae]n|terror|fuel|power outage|blackout|refiner|coal|mine\b", re.I)


def markdown_text(item: str) -> str:
    """A Markdown list item as plain text: citations removed, links replaced by their text."""
    item = CITATION.sub("", item)
    item = LINK.sub(r"\1", item).replace("*", "").strip()
    return re.sub(r"\s+", " ", item)


def day_stories(page: str) -> dict[str, list[dict]]:
    """Stories per section of one day's page: the headings of a top-level bullet and its cited items."""
    section, current = None, None
    stories: dict[str, list[dict]] = collections.defaultdict(list)
    for line in page.split("\n"):
        if line.startswith("#### "):
            section, current = line[5:].strip(), None
            continue
        match = re.match(r"^(\s*)\* (.*)$", line)
        if not match or not section:
            continue
        raw = match.group(2)
        if not match.group(1):
            current = {"heads": [], "items": []}
            stories[section].append(current)
        if current is None:
            continue
        current["items" if "[(" in raw else "heads"].append(markdown_text(raw))
    return stories


def story_pairs(story: dict) -> list[list[str]]:
    """The pairs of a story: its "A–B relations" headings, else the two countries it names."""
    pairs = []
    for head in story["heads"]:
        for m in re.finditer(r"([^,]+?)\s*[–-]\s*([^,]+?) relations", head):
            a, b = countries(m.group(1)), countries(m.group(2))
            if a and b and a[0] != b[0]:
                pairs.append([a[0], b[0]])
    if not pairs:
        named = list(dict.fromkeys(countries(" ".join(story["heads"] + story["items"]))))
        if len(named) == 2:
            pairs = [named]
    return [list(p) for p in dict.fromkeys(tuple(p) for p in pairs)]


def wikipedia_documents(repo: Path) -> tuple[list[dict], list[dict]]:
    """International-relations stories (one document each) and off-topic weeks (one document per section)."""
    files = git(repo, "ls-tree", "-r", "--name-only", "HEAD", "docs/_posts").split()
    dated = [(f, m.group(1)) for f in files if (m := re.search(r"(\d{4}-\d{2}-\d{2})", f))]
    dated = [(f, d) for f, d in dated if not d.startswith(("2027", "2020"))]  # a stray future page and an old one
    pages = blobs(repo, [f"HEAD:{f}" for f, _ in dated])
    relations: list[dict] = []
    weeks: dict[tuple, dict] = {}
    for (path, date), page in zip(dated, pages, strict=True):
        source = f"github:{WIKI_REPO}:{path} (English Wikipedia, Portal:Current events, {date})"
        for section, stories in day_stories(page.decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")).items():
            if section == "International relations":
                for story in stories:
                    pairs = story_pairs(story) if story["items"] else []
                    if not pairs or sum(len(x.split()) for x in story["items"]) < 25:
                        continue
                    title = " / ".join(story["heads"]) if story["heads"] else story["items"][0][:120]
                    relations.append(
                        {"title": title, "lines": story["items"], "date": date, "pairs": pairs, "source": source,
                         "licence": CC_BY_SA, "origin": "wp-current-events", "key": tuple(sorted(pairs[0]))}
                    )
            elif section in OFF_TOPIC_SECTIONS or section in POOL_OFF_TOPIC_SECTIONS:
                year, week, _ = datetime.date.fromisoformat(date).isocalendar()
                items = [
                    i for s in stories for i in s["items"] if not TOPICAL.search(i) and len(set(countries(i))) < 2
                ]
                if section in POOL_OFF_TOPIC_SECTIONS:
                    items = [i for i in items if not NOT_OFF_TOPIC.search(i)]
                doc = weeks.setdefault(
                    (section, year, week),
                    {"title": f"{section}: news of the week {year}-W{week:02d}", "lines": [], "date": date,
                     "pairs": [], "files": [], "licence": CC_BY_SA, "origin": "wp-current-events-offtopic",
                     "key": section},
                )
                doc["lines"] += items
                doc["files"].append(path)
    off_topic = []
    for (section, _, _), doc in weeks.items():
        if len(doc["lines"]) < 2:
            continue
        files = doc.pop("files")
        pages = ", ".join(files)
        doc["source"] = f"github:{WIKI_REPO}:{pages} (English Wikipedia, Portal:Current events, section {section})"
        off_topic.append(doc)
    return relations, off_topic


# ---------------------------------------------------------------- choosing documents and splitting them

def by_key(docs: list[dict], rng: random.Random) -> dict:
    """Documents grouped by their key (partner country, pair or section), each group shuffled."""
    groups: dict = collections.defaultdict(list)
    for doc in docs:
        groups[doc["key"]].append(doc)
    for key in groups:
        rng.shuffle(groups[key])
    return groups


def round_robin(groups: dict, start: int, stop: int, limit: int | None = None) -> list[dict]:
    """The ``start``-th to ``stop - 1``-th document of every group, group by group (sorted keys) per round."""
    chosen = []
    for rnd in range(start, stop):
        for key in sorted(groups):
            if len(groups[key]) > rnd and (limit is None or len(chosen) < limit):
                chosen.append(groups[key][rnd])
        if limit is not None and len(chosen) >= limit:
            break
    return chosen


BOILERPLATE = re.compile(
    r"^(photo|caption|sources?:|image|credit|file photo|related|see also|please click|\*\*\*)", re.I
)


def clean_sentences(doc: dict, doc_id: str) -> list[str]:
    """The document's sentences, without short, all-caps, URL and boilerplate ones."""
    sentences, _ = split_text("\n".join(doc["lines"]), doc_id=doc_id)
    kept = []
    for sentence in sentences:
        text = sentence.text.strip()
        if len(text.split()) < 4 or BOILERPLATE.match(text) or text == text.upper():
            continue
        if re.search(r"https?://|www\.", text):
            continue
        kept.append(text)
    return kept


def number(docs: list[dict], prefix: str = "") -> list[tuple[str, dict, list[str]]]:
    """Documents with their ids (``<prefix><sd|wce|wco><0001>``, counted per origin) and sentences."""
    count: collections.Counter = collections.Counter()
    staged = []
    for doc in docs:
        count[doc["origin"]] += 1
        doc_id = f"{prefix}{PREFIX[doc['origin']]}{count[doc['origin']]:04d}"
        staged.append((doc_id, doc, clean_sentences(doc, doc_id)))
    return staged


def drop_repeats(staged: list, frequency: collections.Counter) -> list:
    """Sentences in 3 or more documents (sign-offs, stock phrases) removed; documents left empty or with
    over 60 sentences (long fact sheets) removed."""
    out = []
    for doc_id, doc, texts in staged:
        keep = [t for t in texts if frequency[t] < 3]
        if keep and len(keep) <= 60:
            out.append((doc_id, doc, keep))
    return out


class Collection:
    """Every candidate document of the two mirrors, and the labelled corpus's choice among them."""

    def __init__(self, state_dept: Path, wikipedia: Path, off_topic_share: float = 0.2) -> None:
        rng = random.Random(SEED)
        self.releases = [d for d in map(release_document, rss_items(state_dept)) if d]
        self.release_groups = by_key(self.releases, rng)
        self.relations, off_topic = wikipedia_documents(wikipedia)
        self.off_topic = [d for d in off_topic if d["key"] in OFF_TOPIC_SECTIONS]
        self.pool_off_topic = [d for d in off_topic if d["key"] in POOL_OFF_TOPIC_SECTIONS]
        self.relation_groups = by_key(self.relations, rng)
        on_topic = round_robin(self.release_groups, 0, 3) + round_robin(self.relation_groups, 0, 2)
        n_off = round(len(on_topic) * off_topic_share / (1 - off_topic_share))
        self.off_groups = by_key(self.off_topic, random.Random(SEED))
        self.corpus = on_topic + round_robin(self.off_groups, 0, 1000, limit=n_off)
        self.n_off_corpus = n_off


def corpus_rows(collection: Collection) -> list[dict]:
    """The labelled corpus's sentences, one row per sentence with its pairs."""
    staged = number(collection.corpus)
    frequency = collections.Counter(t for _, _, texts in staged for t in set(texts))
    rows = []
    for doc_id, doc, texts in drop_repeats(staged, frequency):
        for index, text in enumerate(texts):
            rows.append(
                {"id": f"{doc_id}-{index:02d}", "doc_id": doc_id, "text": text, "source": doc["source"],
                 "licence": doc["licence"], "date": doc["date"], "pairs": doc["pairs"], "title": doc["title"]}
            )
    return rows


def document_keys(doc: dict) -> set[tuple]:
    """What identifies a document across runs: a release's URL and title, a story's page and heading, a week's
    title."""
    if doc["licence"] == PUBLIC_DOMAIN:
        return {("url", doc["source"].rsplit("original ", 1)[-1]), ("title", doc["title"])}
    if doc["pairs"]:
        return {("story", doc["source"], doc["title"])}
    return {("title", doc["title"])}


def pool_rows(
    collection: Collection,
    labelled: list[dict],
    seeds: list[str],
    releases_per_country: int = 3,
    stories_per_pair: int = 20,
    off_topic_share: float = 0.1,
    threshold: float = 0.8,
) -> tuple[list[dict], dict]:
    """Unlabelled rows (one per sentence and target) from documents the labelled corpus left unused."""
    on_topic = round_robin(collection.release_groups, 3, 3 + releases_per_country) + round_robin(
        collection.relation_groups, 2, 2 + stories_per_pair
    )
    unused_off = round_robin(collection.off_groups, 0, 1000)[collection.n_off_corpus :] + round_robin(
        by_key(collection.pool_off_topic, random.Random(SEED)), 0, 1000
    )
    n_off = round(len(on_topic) * off_topic_share / (1 - off_topic_share))
    taken = {key for row in labelled for key in document_keys(row)}
    candidates = [d for d in on_topic + unused_off[:n_off] if not document_keys(d) & taken]
    report: dict = {"documents_already_labelled": len(on_topic) + min(n_off, len(unused_off)) - len(candidates)}

    staged = number(candidates, prefix="pool-")
    everything = number(collection.corpus) + staged
    frequency = collections.Counter(t for _, _, texts in everything for t in set(texts))
    staged = drop_repeats(staged, frequency)
    labelled_texts = {normalise(row["text"]) for row in labelled}
    seen: set[str] = set()
    in_labelled = repeated = 0
    kept = []
    for doc_id, doc, texts in staged:
        unique = []
        for text in texts:
            key = normalise(text)
            if key in labelled_texts:
                in_labelled += 1
            elif key in seen:
                repeated += 1
            else:
                seen.add(key)
                unique.append(text)
        kept.append((doc_id, doc, unique))
    texts = [t for _, _, doc_texts in kept for t in doc_texts]
    near_seeds = {leak.train_text for leak in find_leaks(texts, seeds, threshold=threshold)}
    # near-copies of labelled sentences (a national-day message for another year) teach little: left out too
    near_labelled = {leak.train_text for leak in find_leaks(texts, [r["text"] for r in labelled], threshold)}
    kept = [(i, d, [t for t in texts if t not in near_seeds | near_labelled]) for i, d, texts in kept]
    kept = [(i, d, texts) for i, d, texts in kept if texts]
    report.update(
        sentences_in_labelled_corpus=in_labelled,
        sentences_near_labelled_corpus=len(near_labelled - near_seeds),
        sentences_repeated_in_pool=repeated,
        sentences_near_seeds=len(near_seeds),
        leak_threshold=threshold,
    )

    pairs = sorted({f"closer {a}–{b} ties" for _, d, _ in kept for a, b in d["pairs"]})
    rows = []
    for doc_id, doc, texts in kept:
        targets = [f"closer {a}–{b} ties" for a, b in doc["pairs"]]
        if not targets:  # an off-topic week names no pair: one of the pool's pairs, fixed per document
            digest = int(hashlib.sha256(doc_id.encode()).hexdigest(), 16)
            targets = [pairs[digest % len(pairs)]] if pairs else [DEFAULT_TARGET]
        for index, text in enumerate(texts):
            for k, target in enumerate(targets):
                rows.append(
                    {"id": f"{doc_id}-{index:02d}" + (f"~{k}" if k else ""), "doc_id": doc_id, "text": text,
                     "target": target, "title": doc["title"], "date": doc["date"], "source": doc["source"],
                     "licence": doc["licence"]}
                )
    report.update(summary(rows))
    return rows, report


def summary(rows: list[dict]) -> dict:
    """Documents, sentences, rows and dates per source."""
    out: dict = {"rows": len(rows), "documents": len({r["doc_id"] for r in rows}), "sources": {}}
    for prefix in PREFIX.values():
        part = [r for r in rows if re.sub(r"^pool-", "", r["doc_id"]).startswith(prefix)]
        if part:
            out["sources"][prefix] = {
                "documents": len({r["doc_id"] for r in part}),
                "sentences": len({r["id"].split("~")[0] for r in part}),
                "rows": len(part),
                "first": min(r["date"] for r in part),
                "last": max(r["date"] for r in part),
            }
    return out


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("corpus", "pool"):
        command = sub.add_parser(name)
        command.add_argument("--state-dept", type=Path, required=True, help=f"git directory of {SD_REPO}")
        command.add_argument("--wikipedia", type=Path, required=True, help=f"git directory of {WIKI_REPO}")
        command.add_argument("--out", type=Path, required=True)
    pool = sub.choices["pool"]
    pool.add_argument("--labelled", type=Path, required=True, help="the labelled corpus's sentences (raw format)")
    pool.add_argument("--seeds", type=Path, required=True, help="the seed sentences, kept out of the pool")
    pool.add_argument("--releases-per-country", type=int, default=3, help="unused releases per partner country")
    pool.add_argument("--stories-per-pair", type=int, default=20, help="unused stories per pair (20: all)")
    pool.add_argument("--off-topic-share", type=float, default=0.1, help="share of off-topic documents")
    pool.add_argument("--leak-threshold", type=float, default=0.8)
    args = parser.parse_args(argv)
    for repo in (args.state_dept, args.wikipedia):
        if not repo.exists():
            raise SystemExit(f"error: {repo}: no such git directory")
    collection = Collection(args.state_dept, args.wikipedia)
    if args.command == "corpus":
        rows = corpus_rows(collection)
        report = summary(rows)
    else:
        seeds = [r["text"] for r in read_jsonl(args.seeds)]
        rows, report = pool_rows(
            collection, read_jsonl(args.labelled), seeds, args.releases_per_country, args.stories_per_pair,
            args.off_topic_share, args.leak_threshold,
        )
    write_jsonl(args.out, rows)
    print(json.dumps({"out": str(args.out), **report}, indent=2), file=sys.stderr)


if __name__ == "__main__":
    main()
