module cometp2p/upnpharness

go 1.21

require github.com/tendermint/tendermint v0.34.24

require (
	github.com/go-kit/log v0.2.1 // indirect
	github.com/go-logfmt/logfmt v0.5.1 // indirect
	github.com/pkg/errors v0.9.1 // indirect
)
