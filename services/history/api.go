package history

import (
	"crypto/subtle"
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
// UI's sign-in sets (TokenCookie: HttpOnly, SameSite=Strict), or gets 401 — the UI's pages a
// sign-in form asking for the token. Without a token, h as it is.
func Guard(h http.Handler, token string) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == signIn && r.Method == http.MethodPost {
			given := r.PostFormValue("token")
			if subtle.ConstantTimeCompare([]byte(given), []byte(token)) != 1 {
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, signInPage("That token is not the one this server was given."))
				return
			}
			http.SetCookie(w, &http.Cookie{Name: TokenCookie, Value: token, Path: "/", HttpOnly: true,
				SameSite: http.SameSiteStrictMode, Secure: r.TLS != nil})
			http.Redirect(w, r, "/ui/", http.StatusSeeOther)
			return
		}
		auth := []byte(r.Header.Get("Authorization"))
		if c, err := r.Cookie(TokenCookie); err == nil && len(auth) == 0 {
			auth = []byte("Bearer " + c.Value)
		}
		if subtle.ConstantTimeCompare(auth, want) != 1 {
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

// TokenCookie holds the API token in a browser signed in to the web UI.
const TokenCookie = "troupe-token"

const signIn = "/ui/sign-in"

func signInPage(problem string) string {
	if problem != "" {
		problem = `<p class="problem">` + html.EscapeString(problem) + `</p>`
	}
	return `<!doctype html><html><head><meta charset="utf-8"><title>troupe: sign in</title></head><body>
<h1>troupe</h1><p>This server asks for its API token (the file given to --api-token-file).</p>` + problem + `
<form method="post" action="` + signIn + `"><input type="password" name="token" autocomplete="current-password" aria-label="token"> <button>Sign in</button></form>
</body></html>`
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
