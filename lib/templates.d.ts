// Templates are imported as text (`with { type: "text" }`) and compiled into the binary. (bun-types already types
// *.xml imports as a parsed Document; with type "text" they are strings: modules cast them.)
declare module "*.nft" { const text: string; export default text; }
declare module "*.yaml" { const text: string; export default text; }
declare module "*.sh" { const text: string; export default text; }
