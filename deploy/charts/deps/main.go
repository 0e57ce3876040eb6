// Command deps is `make deploy-deps`: it packages the troupe chart's dependencies into its
// charts/ directory, as `helm dependency build` would, from local copies of them.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/troupe-dev/troupe/deploy/charts"
)

func main() {
	chart := flag.String("chart", "deploy/charts/troupe", "the chart whose dependencies to package")
	from := flag.String("from", "../shared/fixtures/nats/helm/charts", "directories (comma-separated) holding the dependencies' charts")
	flag.Parse()
	out, err := charts.BuildDependencies(*chart, strings.Split(*from, ",")...)
	if err != nil {
		fmt.Fprintln(os.Stderr, "deploy-deps:", err)
		os.Exit(1)
	}
	for _, p := range out {
		fmt.Println("packaged", p)
	}
}
