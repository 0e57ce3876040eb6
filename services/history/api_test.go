package history_test

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/troupe-dev/troupe/services/history"
)

// TestAPIOffLoopbackNeedsAToken: the history API may listen off loopback only with a token, and
// then answers only requests that carry it.
func TestAPIOffLoopbackNeedsAToken(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8081": true, "localhost:8081": true, "[::1]:8081": true,
		":8081": false, "0.0.0.0:8081": false, "10.0.0.5:8081": false, "[::]:8081": false} {
		err := history.CheckAPIListen(addr, "")
		assert.Equal(t, ok, err == nil, "%s: %v", addr, err)
		assert.NoError(t, history.CheckAPIListen(addr, "s3cret"), addr)
	}

	h := history.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("manifests")) }), "s3cret")
	for auth, code := range map[string]int{"": http.StatusUnauthorized, "Bearer nope": http.StatusUnauthorized,
		"Bearer s3cret": http.StatusOK, "s3cret": http.StatusUnauthorized} {
		req := httptest.NewRequest(http.MethodGet, "/releases", nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, code, rec.Code, "Authorization %q", auth)
		assert.Equal(t, code == http.StatusOK, rec.Body.String() == "manifests")
	}
}

// TestUISignIn: with a token, the web UI's pages ask for it with a sign-in form; the right token
// sets an HttpOnly, SameSite=Strict cookie that then opens the pages and the API, a wrong one
// sets nothing; the API's JSON answers 401 without it.
func TestUISignIn(t *testing.T) {
	h := history.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("page")) }), "s3cret")
	do := func(method, path, body string, cookie *http.Cookie) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		if body != "" {
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	page := do(http.MethodGet, "/ui/", "", nil)
	assert.Equal(t, http.StatusUnauthorized, page.Code)
	assert.Contains(t, page.Body.String(), `<form method="post" action="/ui/sign-in">`)
	api := do(http.MethodGet, "/ui/api/releases", "", nil)
	assert.Equal(t, http.StatusUnauthorized, api.Code)
	assert.Contains(t, api.Body.String(), "a bearer token is required")

	wrong := do(http.MethodPost, "/ui/sign-in", "token=nope", nil)
	assert.Equal(t, http.StatusUnauthorized, wrong.Code)
	assert.Empty(t, wrong.Result().Cookies())
	assert.Contains(t, wrong.Body.String(), "not the one")

	right := do(http.MethodPost, "/ui/sign-in", "token=s3cret", nil)
	assert.Equal(t, http.StatusSeeOther, right.Code)
	cookies := right.Result().Cookies()
	require.Len(t, cookies, 1)
	c := cookies[0]
	assert.Equal(t, history.TokenCookie, c.Name)
	assert.True(t, c.HttpOnly)
	assert.NotContains(t, c.Value, "s3cret", "the cookie is no bearer token")
	assert.Equal(t, http.SameSiteStrictMode, c.SameSite)
	assert.Equal(t, http.StatusOK, do(http.MethodGet, "/ui/", "", c).Code)
	assert.Equal(t, http.StatusOK, do(http.MethodGet, "/releases", "", c).Code)
	assert.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/releases", "", &http.Cookie{Name: history.TokenCookie, Value: "nope"}).Code)
	assert.Equal(t, http.StatusUnauthorized, do(http.MethodGet, "/releases", "", &http.Cookie{Name: history.TokenCookie, Value: "s3cret"}).Code,
		"the token itself is not a session")

	out := do(http.MethodPost, "/ui/sign-out", "", c)
	assert.Equal(t, http.StatusSeeOther, out.Code)
	require.Len(t, out.Result().Cookies(), 1)
	assert.Equal(t, -1, out.Result().Cookies()[0].MaxAge, "signing out removes the cookie")
}

// TestNoTokenLoopbackNamesOnly: without a token the API and the UI answer only requests
// addressed to a loopback name, so that a web site whose name resolves to 127.0.0.1 (DNS
// rebinding) is not their origin.
func TestNoTokenLoopbackNamesOnly(t *testing.T) {
	h := history.Guard(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("page")) }), "")
	for host, code := range map[string]int{"127.0.0.1:8081": 200, "localhost:7070": 200, "[::1]:8081": 200, "localhost": 200,
		"evil.example:8081": 403, "evil.example": 403, "10.0.0.5:8081": 403, "127.0.0.1.nip.io:8081": 403} {
		req := httptest.NewRequest(http.MethodPost, "/ui/api/releases/demo/web/uninstall", strings.NewReader("{}"))
		req.Host = host
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		assert.Equal(t, code, rec.Code, host)
	}
}
