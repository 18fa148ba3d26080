/** Stylesheets are bundled as text (esbuild's text loader) and adopted by a shadow root. */
declare module "*.css" {
  const text: string;
  export default text;
}
