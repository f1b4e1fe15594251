// Where a network writes itself down as an inference graph: the operations of
// its eval-mode forward, in order, each reading named tensors and writing one.
// The blocks (ConvBN, Stem, ResidualBlock, Head) emit themselves into it and
// ResNet walks its blocks, so the exported graph comes from the same objects,
// strides and names that run the forward. Net names the operations only;
// DistTrain's ONNXExport turns them into ONNX nodes (Net knows no file format).
//
// Layouts are the forward's: activations NCHW, conv weight (OC, C, k, k),
// linear weight (OUT, IN). Every call returns the name of the tensor it writes.

public protocol InferenceGraph: AnyObject {
    /// A tensor name not used yet, made from `base` (a layer's state_dict name).
    func uniqueName(_ base: String) -> String
    /// A constant tensor (weights), row-major in `shape`, named `name`.
    func constant(_ name: String, shape: [Int], _ values: [Float]) -> String
    /// y = conv(x, weight) + bias: square `kernel`, the same `stride` and zero `pad` on both axes.
    func conv(_ x: String, weight: String, bias: String, kernel: Int, stride: Int, pad: Int, named: String) -> String
    /// y = max(x, 0).
    func relu(_ x: String, named: String) -> String
    /// y = a + b, same shapes.
    func add(_ a: String, _ b: String, named: String) -> String
    /// Max over square `kernel` windows; padding counts as -infinity.
    func maxPool(_ x: String, kernel: Int, stride: Int, pad: Int, named: String) -> String
    /// (N, C, H, W) -> (N, C, 1, 1), the mean over each map.
    func globalAveragePool(_ x: String, named: String) -> String
    /// (N, C, 1, 1) -> (N, C).
    func flatten(_ x: String, named: String) -> String
    /// y = x weight^T + bias: x (N, IN), weight (OUT, IN), bias (OUT).
    func linear(_ x: String, weight: String, bias: String, named: String) -> String
}
