package http_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/safeflow/safeflow/internal/relaytest"
)

// An endpoint's URL, event types and status change with PATCH, and its
// secret with rotate-secret: during the overlap each delivery carries both
// signatures, and a receiver that knows only one of the secrets verifies
// it (the independent verifier of relaytest); once the previous secret
// expires, only the new one signs.
func TestEndpointsChangeAndRotateTheirSecret(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	recv := relaytest.NewReceiver(t, nil)
	e := h.mustEndpoint(t, recv.URL)
	h.startRelay(t, nil)
	path := "/v1/webhook-endpoints/" + e.ID
	patch := func(key, body string) response {
		return send(t, h.request(t, http.MethodPatch, path, body, "Idempotency-Key", key))
	}
	a := h.mustAccount(t, "USD")
	relaytest.Eventually(t, "account.created delivered", func() bool { return len(recv.Got()) == 1 })
	if sig := recv.Got()[0].Signature; strings.Count(sig, "v1,") != 1 || !relaytest.VerifySignature(e.Secret, recv.Got()[0]) {
		t.Fatalf("before any rotation: signature %q, want one, by the endpoint's secret", sig)
	}

	// PATCH: only deposits from now on; the answer has no secret.
	var changed endpoint
	r := patch("p1", `{"event_types":["deposit.created"]}`).want(t, http.StatusOK)
	r.decode(t, &changed)
	if changed.ID != e.ID || len(changed.EventTypes) != 1 || changed.EventTypes[0] != "deposit.created" || changed.Secret != "" || strings.Contains(string(r.body), "secret") {
		t.Fatalf("PATCH answered %s; want the endpoint with event_types [deposit.created] and no secret", r.body)
	}
	var got endpoint
	h.get(t, path).want(t, http.StatusOK).decode(t, &got)
	if len(got.EventTypes) != 1 || got.URL != e.URL || got.Status != "enabled" {
		t.Errorf("GET after PATCH: %+v", got)
	}
	if again := patch("p1", `{"event_types":["deposit.created"]}`).want(t, http.StatusOK); string(again.body) != string(r.body) || again.header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("PATCH replayed: %s (replayed %q), want the same answer", again.body, again.header.Get("Idempotent-Replayed"))
	}
	patch("p2", `{"status":"paused"}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	patch("p3", `{"url":"ftp://x"}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	patch("p4", `{"secret":"whsec_AAAA"}`).wantProblem(t, http.StatusBadRequest, "invalid_request")
	send(t, h.request(t, http.MethodPatch, "/v1/webhook-endpoints/we_0000000000000000000000000", `{}`, "Idempotency-Key", "p5")).
		wantProblem(t, http.StatusNotFound, "not_found")

	// Rotate with an hour of overlap: the new secret is shown (and again in
	// the replay); deliveries carry both signatures.
	rotate := func(key, body string) endpoint {
		t.Helper()
		var rotated endpoint
		h.post(t, path+"/rotate-secret", key, body).want(t, http.StatusOK).decode(t, &rotated)
		return rotated
	}
	second := rotate("r1", `{"expire_previous_after_seconds":3600}`)
	if second.Secret == "" || second.Secret == e.Secret || len(second.EventTypes) != 1 {
		t.Fatalf("rotate-secret answered %+v; want a new secret", second)
	}
	if replayed := rotate("r1", `{"expire_previous_after_seconds":3600}`); replayed.Secret != second.Secret {
		t.Errorf("the replay of the rotation shows secret %q, want %q", replayed.Secret, second.Secret)
	}
	h.mustDeposit(t, a.ID, 10)
	relaytest.Eventually(t, "deposit.created delivered", func() bool { return len(recv.Got()) == 2 })
	hit := recv.Got()[1]
	if strings.Count(hit.Signature, "v1,") != 2 || !strings.HasPrefix(hit.Signature, "v1,") {
		t.Errorf("during the overlap: signature %q, want two", hit.Signature)
	}
	if !relaytest.VerifySignature(second.Secret, hit) || !relaytest.VerifySignature(e.Secret, hit) {
		t.Errorf("during the overlap, a receiver with only the new or only the old secret must verify %q", hit.Signature)
	}
	if relaytest.VerifySignature("whsec_"+strings.Repeat("A", 43)+"=", hit) {
		t.Error("a stranger's secret verifies the delivery")
	}

	// Rotate with no overlap: only the newest secret signs.
	third := rotate("r2", `{"expire_previous_after_seconds":0}`)
	h.mustDeposit(t, a.ID, 10)
	relaytest.Eventually(t, "the second deposit delivered", func() bool { return len(recv.Got()) == 3 })
	hit = recv.Got()[2]
	if strings.Count(hit.Signature, "v1,") != 1 || !relaytest.VerifySignature(third.Secret, hit) || relaytest.VerifySignature(second.Secret, hit) {
		t.Errorf("after a rotation without overlap: signature %q, want one, by the newest secret only", hit.Signature)
	}
	h.post(t, path+"/rotate-secret", "r3", `{"expire_previous_after_seconds":604801}`).wantProblem(t, http.StatusBadRequest, "invalid_request")

	// Disabled by hand: nothing is sent, the delivery ends dead; enabled
	// again, replaying sends it.
	patch("p6", `{"status":"disabled"}`).want(t, http.StatusOK)
	h.mustDeposit(t, a.ID, 10)
	relaytest.Eventually(t, "the delivery to the disabled endpoint dead", func() bool {
		dead := h.deliveries(t, "status=dead")
		return len(dead) == 1 && dead[0].LastError != nil && strings.Contains(*dead[0].LastError, "disabled")
	})
	if len(recv.Got()) != 3 {
		t.Fatalf("a disabled endpoint received %d requests, want still 3", len(recv.Got()))
	}
	patch("p7", `{"status":"enabled"}`).want(t, http.StatusOK)
	h.post(t, path+"/replay-dead", "rd", ``).want(t, http.StatusOK)
	relaytest.Eventually(t, "the replayed delivery", func() bool { return len(recv.Got()) == 4 })
	if !relaytest.VerifySignature(third.Secret, recv.Got()[3]) {
		t.Error("the replayed delivery is not signed with the current secret")
	}
}
