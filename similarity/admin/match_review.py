"""The review page of a supplier match run: each photo beside its candidates and evidence, the
buyer's decision on it (confirm a candidate, new, skip; keyboard shortcuts in the page),
filters by verdict and decision, the CSV export, and every ``same`` verdict confirmed at once.
Views of MatchRunAdmin (similarity.admin.match_runs), which routes and guards them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.admin import ModelAdmin
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.core.paginator import Paginator
from django.http import (
    HttpRequest,
    HttpResponse,
    HttpResponseRedirect,
    JsonResponse,
    StreamingHttpResponse,
)
from django.http.response import HttpResponseBase
from django.template.response import TemplateResponse
from django.urls import reverse
from lookalike_core.match_report import ERROR, SAME, VERDICTS, Candidate, MatchRow

from catalog.models import Article
from similarity.errors import InvalidDecision
from similarity.models import MatchDecision, MatchRun
from similarity.selectors.matching import (
    DECISION_FILTERS,
    UNDECIDED,
    match_run_csv,
    match_run_decision_counts,
    match_run_decisions,
    match_run_rows,
    match_run_same_pending,
    match_run_thumbnail_name,
)
from similarity.services.matching.decisions import (
    match_decision_record,
    match_decision_undo,
    match_same_confirm,
)

ROWS_PER_PAGE = 25
SHORTCUT_CANDIDATES = 9  # keys 1-9 confirm candidate n
UNDO = "undo"
MSG_NO_DECISION_PERMISSION = "You may view this run but not record decisions on it."
MSG_BAD_CHOICE = "choice must be confirmed:<article id>, new, skipped or undo; got {value!r}"
MSG_NO_RUN = "no match run #{run_id}"
MSG_POST_ONLY = "decisions are recorded with POST"
PREVIEW_ROWS = 50  # same photos listed on the bulk confirmation page


def may_decide(request: HttpRequest) -> bool:
    return request.user.has_perm("similarity.change_matchdecision")


def _filters(request: HttpRequest) -> tuple[str, str]:
    """The page's verdict and decision filters; anything unknown means "all"."""
    verdict = request.GET.get("verdict", "")
    decision = request.GET.get("decision", "")
    return (verdict if verdict in VERDICTS else "",
            decision if decision in DECISION_FILTERS else "")


def _query(**values: Any) -> str:
    return urlencode({name: value for name, value in values.items() if value})


def review_view(admin: ModelAdmin, request: HttpRequest, run: MatchRun) -> HttpResponseBase:
    verdict, decision = _filters(request)
    if request.GET.get("export") == "csv":
        response = StreamingHttpResponse(
            match_run_csv(run=run, verdict=verdict or None, decision=decision or None),
            content_type="text/csv")
        name = "-".join(part for part in (f"match-run-{run.pk}", verdict, decision) if part)
        response["Content-Disposition"] = f'attachment; filename="{name}.csv"'
        return response
    page = Paginator(list(match_run_rows(run=run, verdict=verdict or None,
                                         decision=decision or None)),
                     ROWS_PER_PAGE).get_page(request.GET.get("page"))
    counts = match_run_decision_counts(run=run)
    context = {
        **admin.admin_site.each_context(request), "opts": admin.model._meta,
        "title": f"Match run #{run.pk}: {run.source_name}", "run": run, "page": page,
        "rows": _rows_view(run, list(page)), "verdict": verdict, "decision": decision,
        "counts": counts, "may_decide": may_decide(request), "same_verdict": SAME,
        "verdict_links": [(name, _query(verdict=name, decision=decision))
                          for name in ("", *VERDICTS)],
        "decision_links": [(name, _query(verdict=verdict, decision=name))
                           for name in ("", *DECISION_FILTERS)],
        "export_query": _query(verdict=verdict, decision=decision, export="csv"),
        "page_query": _query(verdict=verdict, decision=decision),
        "return_query": _query(verdict=verdict, decision=decision, page=page.number),
        "decide_url": reverse("admin:similarity_matchrun_decide", args=[run.pk]),
        "confirm_same_url": reverse("admin:similarity_matchrun_confirm_same", args=[run.pk]),
    }
    return TemplateResponse(request, "admin/similarity/matchrun_review.html", context)


def decide_view(request: HttpRequest, run_id: int) -> HttpResponseBase:
    """Record one decision (POST ``supplier_ref`` and ``choice``). The page's script asks for
    JSON (the row and the counts are updated in place); a plain form post is redirected back
    to the page it came from, with the outcome as a message."""
    wants_json = "application/json" in request.headers.get("Accept", "")
    if request.method != "POST":
        return _refused(wants_json, MSG_POST_ONLY, status=405)
    if not may_decide(request):
        raise PermissionDenied(MSG_NO_DECISION_PERMISSION)
    run = MatchRun.objects.filter(pk=run_id).first()
    if run is None:
        return _refused(wants_json, MSG_NO_RUN.format(run_id=run_id), status=404)
    review = reverse("admin:similarity_matchrun_review", args=[run.pk])
    back = f"{review}?{request.POST.get('return_query', '')}"
    supplier_ref = request.POST.get("supplier_ref", "")
    try:
        made = _decide(run, supplier_ref, request.POST.get("choice", ""),
                       decided_by=request.user.get_username())
    except InvalidDecision as exc:
        if wants_json:
            return JsonResponse({"error": str(exc)}, status=400)
        messages.error(request, str(exc))
        return HttpResponseRedirect(back)
    label = _decision_label(made)
    if wants_json:
        return JsonResponse({
            "supplier_ref": supplier_ref, "decision": made.decision if made else "",
            "article_id": made.article_id if made else "", "label": label,
            "counts": match_run_decision_counts(run=run),
        })
    messages.success(request, f"{supplier_ref}: {label}")
    return HttpResponseRedirect(back)


def _refused(wants_json: bool, message: str, *, status: int) -> HttpResponse:
    if wants_json:
        return JsonResponse({"error": message}, status=status)
    return HttpResponse(message, status=status, content_type="text/plain; charset=utf-8")


def _decide(run: MatchRun, supplier_ref: str, choice: str, *,
            decided_by: str) -> MatchDecision | None:
    """The page's ``choice`` (confirmed:<article id>, new, skipped, undo) recorded."""
    decision, _, article_id = choice.partition(":")
    if choice == UNDO:
        match_decision_undo(run=run, supplier_ref=supplier_ref)
        return None
    if decision not in MatchDecision.Decision.values or (
            bool(article_id) != (decision == MatchDecision.Decision.CONFIRMED)):
        raise InvalidDecision(MSG_BAD_CHOICE.format(value=choice))
    return match_decision_record(run=run, supplier_ref=supplier_ref, decision=decision,
                                 article_id=article_id, decided_by=decided_by)


def _decision_label(made: MatchDecision | None) -> str:
    if made is None:
        return "undecided"
    if made.decision == MatchDecision.Decision.CONFIRMED:
        return f"confirmed: {made.article_id}"
    return str(made.decision)


def confirm_same_view(admin: ModelAdmin, request: HttpRequest,
                      run: MatchRun) -> HttpResponseBase:
    """GET: what confirming every ``same`` verdict would record; POST: record it."""
    if not may_decide(request):
        raise PermissionDenied(MSG_NO_DECISION_PERMISSION)
    review = reverse("admin:similarity_matchrun_review", args=[run.pk])
    if request.method == "POST":
        outcome = match_same_confirm(run=run, decided_by=request.user.get_username())
        messages.success(request, (
            f"{outcome.confirmed} {SAME} photo{'s' if outcome.confirmed != 1 else ''} "
            f"confirmed as their first match; {outcome.already_decided} already decided "
            "left as they were."))
        return HttpResponseRedirect(f"{review}?{_query(verdict=SAME)}")
    pending, already = match_run_same_pending(run=run)
    context = {
        **admin.admin_site.each_context(request), "opts": admin.model._meta,
        "title": f"Confirm the {SAME} verdicts of match run #{run.pk}", "run": run,
        "pending": pending[:PREVIEW_ROWS], "pending_count": len(pending),
        "more": max(0, len(pending) - PREVIEW_ROWS), "already": already,
        "review_url": review, "same_verdict": SAME,
    }
    return TemplateResponse(request, "admin/similarity/matchrun_confirm_same.html", context)


def _rows_view(run: MatchRun, rows: list[MatchRow]) -> list[dict[str, Any]]:
    """Each row with its photo's thumbnail, its decision, and its candidates' thumbnails,
    admin links and evidence."""
    wanted = {article_id for row in rows for article_id, *_ in row.matches}
    decided = match_run_decisions(run=run, supplier_refs=[row.supplier_ref for row in rows])
    wanted |= {made.article_id for made in decided.values() if made.article_id}
    articles = {
        values["article_id"]: values
        for values in Article.objects.filter(article_id__in=wanted).values(
            "pk", "article_id", "title", "image")
    }
    views = []
    for row in rows:
        made = decided.get(row.supplier_ref)
        candidates = [_candidate(candidate, articles, rank)
                      for rank, candidate in enumerate(row.candidates, start=1)]
        chosen = made.article_id if made else ""
        views.append({
            "row": row, "matches": candidates, "decision": made,
            "decision_name": made.decision if made else UNDECIDED,
            "decision_label": _decision_label(made),
            # A confirmed article that is not one of the candidates is shown beside them.
            "chosen_elsewhere": (
                _candidate(Candidate(chosen, 0.0), articles, 0)
                if chosen and chosen not in {m["article_id"] for m in candidates} else None),
            "thumbnail_url": "" if row.verdict == ERROR else reverse(
                "admin:similarity_matchrun_thumbnail",
                args=[run.pk, match_run_thumbnail_name(run=run, supplier_ref=row.supplier_ref)],
            ),
        })
    return views


def _candidate(candidate: Candidate, articles: Mapping[str, Mapping[str, Any]],
               rank: int) -> dict[str, Any]:
    """A candidate card: thumbnail, admin link, distance and evidence (None: unverified)."""
    article = articles.get(candidate.article_id)
    return {
        "article_id": candidate.article_id, "distance": candidate.distance, "rank": rank,
        "inliers": candidate.inliers, "inlier_ratio": candidate.inlier_ratio,
        "shortcut": rank if 0 < rank <= SHORTCUT_CANDIDATES else None,
        "title": article["title"] if article else "",
        "thumbnail_url": (default_storage.url(article["image"])
                          if article and article["image"] else ""),
        "change_url": (reverse("admin:catalog_article_change", args=[article["pk"]])
                       if article else ""),
    }
