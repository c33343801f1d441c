//go:build !prims_nogs

package artifactstore

// gs:// adds about 30 MB to the binary (the Cloud Storage client and gRPC):
// -tags prims_nogs leaves it out.
import _ "gocloud.dev/blob/gcsblob"
