//go:build !prims_noazblob

package artifactstore

// azblob:// adds about 8 MB to the binary: -tags prims_noazblob leaves it
// out.
import _ "gocloud.dev/blob/azureblob"
