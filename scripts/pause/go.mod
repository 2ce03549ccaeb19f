module objmig.dev/pause

go 1.22
