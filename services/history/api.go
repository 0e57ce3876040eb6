package history

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"html"
	"net"
	"net/http"
	"strings"
)

// DefaultAPIListen is where the history's HTTP API listens unless told otherwise: loopback, so
// the manifests it serves reach no one off the host by default.
const DefaultAPIListen = "127.0.0.1:8081"

// Guard wraps the HTTP API h: with a token, a request must carry "Authorization: Bearer
// <token>" (compared in constant time), or, for the web UI's pages in a browser, the cookie the
// UI's sign-in sets (TokenCookie: a keyed hash of the token, never the token; HttpOnly,
// SameSite=Strict, Secure behind TLS), or gets 401 — the UI's pages a sign-in form asking for
// the token. Without a token, h answers only to loopback names (LoopbackOnly).
func Guard(h http.Handler, token string) http.Handler {
	if token == "" {
		return LoopbackOnly(h)
	}
	want := []byte("Bearer " + token)
	session := sessionOf(token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		secure := r.TLS != nil || r.Header.Get("X-Forwarded-Proto") == "https"
		switch {
		case r.URL.Path == signIn && r.Method == http.MethodPost:
			r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
			if subtle.ConstantTimeCompare([]byte(r.PostFormValue("token")), []byte(token)) != 1 {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, signInPage("That token is not the one this server was given."))
				return
			}
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: session, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: secure})
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		case r.URL.Path == signOut && r.Method == http.MethodPost:
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Path: "/", MaxAge: -1, HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: secure})
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		}
		ok := subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) == 1
		if c, err := r.Cookie(TokenCookie); err == nil && !ok {
			ok = subtle.ConstantTimeCompare([]byte(c.Value), []byte(session)) == 1
		}
		if !ok {
			if strings.HasPrefix(r.URL.Path, "/ui/") && !strings.HasPrefix(r.URL.Path, "/ui/api/") {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, signInPage(""))
				return
			}
			w.Header().Set("WWW-Authenticate", `Bearer realm="troupe history"`)
			http.Error(w, `{"error":"a bearer token is required"}`, http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// sessionOf is what the sign-in cookie holds for token: a keyed hash, so that the cookie is no
// bearer token for the API's other clients, and any token fits in a cookie.
func sessionOf(token string) string {
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("troupe web UI session"))
	return hex.EncodeToString(m.Sum(nil))
}

// TokenCookie holds the API token in a browser signed in to the web UI.
const TokenCookie = "troupe-token"

const (
	signIn  = "/ui/sign-in"
	signOut = "/ui/sign-out"
)

func signInPage(problem string) string {
	if problem != "" {
		problem = `<p class="problem">` + html.EscapeString(problem) + `</p>`
	}
	return `<!doctype html><html><head><meta charset="utf-8"><title>troupe: sign in</title></head><body>
<h1>troupe</h1><p>This server asks for its API token (the file given to --api-token-file).</p>` + problem + `
<form method="post" action="` + signIn + `"><input type="password" name="token" autocomplete="current-password" aria-label="token"> <button>Sign in</button></form>
</body></html>`
}

// LoopbackOnly answers only requests addressed to a loopback name or address (the Host header:
// localhost, 127.0.0.1, [::1]), and refuses the rest with 403: without a token, a page of any
// web site whose name it made resolve to 127.0.0.1 (DNS rebinding) would otherwise be the same
// origin as the API and the web UI, and read them and press the UI's buttons.
func LoopbackOnly(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if hp, _, err := net.SplitHostPort(r.Host); err == nil {
			host = hp
		}
		if !loopback(net.JoinHostPort(strings.Trim(host, "[]"), "0")) {
			msg, _ := json.Marshal(map[string]string{"error": "without a token this server answers only to a loopback name (localhost, 127.0.0.1, [::1]), not " + host})
			http.Error(w, string(msg), http.StatusForbidden)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// CheckAPIListen refuses to serve the HTTP API on addr off loopback without a token: it serves
// every release's manifests.
func CheckAPIListen(addr, token string) error {
	if token != "" || loopback(addr) {
		return nil
	}
	return fmt.Errorf("the history API on %s is reachable off this host: give it a bearer token (--api-token-file), or listen on loopback", addr)
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
