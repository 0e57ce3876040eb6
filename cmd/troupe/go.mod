module github.com/troupe-dev/troupe/cmd/troupe

go 1.26.8
