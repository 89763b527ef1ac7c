// Starts Swagger UI on the hub's /docs page (api/docs.py).
// A file rather than an inline script, so the page runs under a Content Security Policy with
// script-src 'self'. The OpenAPI document's URL comes from the page (data-openapi-url).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    // The default validator badge is an image from validator.swagger.io: nothing leaves the hub.
    validatorUrl: null,
    showExtensions: true,
    showCommonExtensions: true,
  });
})();
